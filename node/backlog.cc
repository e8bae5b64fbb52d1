#include "node/backlog.h"

#include "broker/client/subjects.h"
#include "common/log.h"

namespace fnmesh::node {

result<std::unique_ptr<backlog>> backlog::open(broker::connection& conn, handler on_work) {
  std::unique_ptr<backlog> self(new backlog(conn, std::move(on_work)));
  const std::string all = broker::doorbell_subject("*", "*");
  if (natsStatus s = natsConnection_Subscribe(&self->sub_, conn.nats(), all.c_str(), &backlog::on_doorbell,
                                              self.get());
      s != NATS_OK)
    return fail(broker::make_nats_error(s));
  return self;
}

backlog::~backlog() {
  if (!sub_) return;
  natsSubscription_Unsubscribe(sub_);
  natsSubscription_Destroy(sub_);
}

void backlog::on_doorbell(natsConnection*, natsSubscription*, natsMsg* m, void* self) noexcept {
  static_cast<backlog*>(self)->notify(natsMsg_GetSubject(m));
  natsMsg_Destroy(m);
}

void backlog::notify(std::string_view subject) noexcept {
  // fnmesh.<kind>.<tenant>.<function>
  const size_t kind = subject.find('.');
  const size_t tenant = kind == subject.npos ? kind : subject.find('.', kind + 1);
  const size_t function = tenant == subject.npos ? tenant : subject.find('.', tenant + 1);
  if (function == subject.npos || subject.find('.', function + 1) != subject.npos) return;
  try {
    on_work_(subject.substr(tenant + 1, function - tenant - 1), subject.substr(function + 1));
  } catch (const std::exception& e) {
    logger("node")->error("backlog handler threw: {}", e.what());
  }
}

result<void> backlog::poll() {
  jsOptions o;
  jsOptions_Init(&o);
  const std::string all = broker::invoke_subject("*", "*");
  o.Stream.Info.SubjectsFilter = all.c_str();
  jsStreamInfo* info = nullptr;
  jsErrCode code = jsErrCode(0);
  if (natsStatus s = js_GetStreamInfo(&info, conn_.js(), std::string(broker::invoke_stream).c_str(), &o, &code);
      s != NATS_OK)
    return fail(broker::make_nats_error(s));
  if (const auto* subjects = info->State.Subjects)
    for (int i = 0; i < subjects->Count; ++i)
      if (subjects->List[i].Msgs > 0) notify(subjects->List[i].Subject);
  jsStreamInfo_Destroy(info);
  return {};
}

}  // namespace fnmesh::node
