// hello-node: greets whoever the event names.
exports.handle = async (event, ctx) => {
  const name = typeof event?.name === 'string' ? event.name : 'world';
  return { greeting: `Hello, ${name}!`, invocation: ctx.invocation_id };
};
