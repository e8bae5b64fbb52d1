#pragma once
// prices: what each billed quantity costs, read once at start from a YAML price file, and
// the cost of one attempt under both billing models. Money is an integer number of
// pico-USD (1e-12 USD): Lambda's request fee is 0.2 micro-USD and 1 ms at 128 MB costs
// 0.002 micro-USD, too little for micro-USD. Each part of a record's cost is rounded once,
// to the nearest pico-USD; totals are integer sums, so they never drift. Immutable after
// load.
//
//   lambda:                 # billed duration (rounded up to 1 ms) x configured memory
//     gb_second: 0.0000166667
//     request: 0.0000002
//   usage:                  # what the sandbox really used
//     cpu_second: 0.000011244444
//     memory_gb_second: 0.000001234722   # peak memory x wall time
//     network_gb: 0.09                   # received + sent
//     request: 0.0000002
//
// Prices are USD decimals with at most 12 fractional digits, parsed exactly (never
// through a double). A key left out keeps its default. GB is 2^30 bytes, as Lambda's MB
// is 2^20.
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace fnmesh::collector {

inline constexpr int64_t pusd_per_usd = 1'000'000'000'000;

// One attempt's metered quantities (the Usage record).
struct metered {
  int64_t billed_ms = 0;
  int64_t memory_limit_bytes = 0;  // configured memory; billed in whole MB, rounded up
  int64_t cpu_ns = 0;              // user + system
  int64_t peak_memory_bytes = 0;
  int64_t wall_ns = 0;
  int64_t network_bytes = 0;       // received + sent
};

struct costs {
  int64_t lambda_pusd = 0;
  int64_t usage_pusd = 0;
};

struct prices {
  // AWS public x86 prices (us-east-1): Lambda $0.0000166667 per GB-s and $0.20 per
  // million requests; the usage model's CPU and memory at Fargate's $0.04048 per
  // vCPU-hour and $0.004445 per GB-hour, network at $0.09 per GB out.
  int64_t lambda_gb_second_pusd = 16'666'700;
  int64_t lambda_request_pusd = 200'000;
  int64_t usage_cpu_second_pusd = 11'244'444;
  int64_t usage_memory_gb_second_pusd = 1'234'722;
  int64_t usage_network_gb_pusd = 90'000'000'000;
  int64_t usage_request_pusd = 200'000;

  // Throws std::runtime_error "FILE:LINE: lambda.gb_second: <what is wrong>" for an
  // unknown key, a value that is not a non-negative decimal with <= 12 fractional
  // digits, or YAML that does not parse; "FILE: cannot read" for a missing file.
  static prices load(const std::filesystem::path& file);
  static prices parse(std::string_view yaml, const std::string& file);

  // Both models' cost of one attempt. Never overflows (the products are taken in 128
  // bits); a cost beyond int64 is capped at INT64_MAX.
  costs of(const metered& m) const noexcept;
};

// Exact decimal text of an amount: 12345 -> "0.000000012345", -5 -> "-0.000000000005".
std::string format_usd(int64_t pusd);

}  // namespace fnmesh::collector
