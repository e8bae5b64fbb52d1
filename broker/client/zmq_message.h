#pragma once
// What every ZeroMQ endpoint of fnmesh shares: receiving one whole message (all frames)
// within a deadline, and zmq errors as std::error_code.
#include <zmq.hpp>

#include <chrono>
#include <system_error>
#include <vector>

#include "common/result.h"

namespace fnmesh::broker {

std::error_code zmq_error(const zmq::error_t& e) noexcept;

// The next message's frames, or errc::timeout once `timeout` has passed.
result<std::vector<zmq::message_t>> receive_message(zmq::socket_t& socket,
                                                    std::chrono::milliseconds timeout);

}  // namespace fnmesh::broker
