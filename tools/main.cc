// fnmesh: the command line of the mesh. Parses, then runs the one subcommand given.
#include <exception>

#include "common/log.h"
#include "tools/cli.h"

int main(int argc, char** argv) {
  using namespace fnmesh::cli;
  CLI::App app{"fnmesh: functions on a mesh of peer nodes (NATS JetStream + ZeroMQ)"};
  app.require_subcommand(1);
  app.fallthrough();  // global options may follow the subcommand
  context ctx;
  ctx.add_global_options(app);
  command_list commands;
  add_mesh_commands(app, ctx, commands);
  add_deploy_commands(app, ctx, commands);
  add_invoke_command(app, ctx, commands);
  add_publish_command(app, ctx, commands);
  add_collector_commands(app, ctx, commands);
  add_nodes_command(app, ctx, commands);
  add_bench_command(app, ctx, commands);
  add_logs_command(app, ctx, commands);
  add_dlq_commands(app, ctx, commands);
  CLI11_PARSE(app, argc, argv);

  fnmesh::set_log_level(ctx.log_level());
  try {
    for (const auto& c : commands)
      if (c.app->parsed()) return c.run();
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return 1;
}
