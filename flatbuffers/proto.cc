#include "flatbuffers/proto.h"

namespace fnmesh::proto {

const char* status_name(Status s) noexcept { return EnumNameStatus(s); }
const char* runtime_name(Runtime r) noexcept { return EnumNameRuntime(r); }
const char* trigger_name(Trigger t) noexcept { return EnumNameTrigger(t); }

}  // namespace fnmesh::proto
