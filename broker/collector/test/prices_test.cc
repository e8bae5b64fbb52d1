#include "broker/collector/prices.h"

#include <gtest/gtest.h>

#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>

#include "tests/support/temp_dir.h"

using fnmesh::collector::format_usd;
using fnmesh::collector::metered;
using fnmesh::collector::prices;

namespace {

constexpr int64_t mb = 1 << 20;
constexpr int64_t gb = 1 << 30;
constexpr int64_t int64_max = std::numeric_limits<int64_t>::max();

std::string error_of(std::string_view yaml) {
  try {
    prices::parse(yaml, "fnmesh.prices.yml");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "no error";
}

// Only the lambda GB-s price, at 1 pUSD per MB-ms: the cost is billed_ms x billed MB.
prices per_mb_ms() {
  prices p;
  p.lambda_gb_second_pusd = 1000 * 1024;
  p.lambda_request_pusd = 0;
  return p;
}

TEST(prices, defaults_are_aws_prices) {
  const prices p;
  // 1 ms at 128 MB: 1 x 128 x 16,666,700 / (1000 x 1024) = 2,083.3375 -> 2,083 pUSD,
  // + 200,000 pUSD request fee = 202,083 pUSD. A million of them: 202,083,000,000 pUSD =
  // $0.202083 (AWS's calculator: 125 GB-s x $0.0000166667 + $0.20 = $0.2020833; each
  // record is rounded once, to the nearest pUSD).
  const auto one = p.of({.billed_ms = 1, .memory_limit_bytes = 128 * mb});
  EXPECT_EQ(one.lambda_pusd, 202'083);
  EXPECT_EQ(format_usd(one.lambda_pusd * 1'000'000), "0.202083000000");
  // 1 s at 1024 MB is exactly one GB-s.
  EXPECT_EQ(p.of({.billed_ms = 1000, .memory_limit_bytes = 1024 * mb}).lambda_pusd,
            16'666'700 + 200'000);
  // 15 min at 10 GB: 9,000 GB-s x $0.0000166667 = $0.1500003.
  EXPECT_EQ(p.of({.billed_ms = 900'000, .memory_limit_bytes = 10 * gb}).lambda_pusd,
            150'000'300'000 + 200'000);

  // Usage: 1 CPU-s, 1 GB held for 1 s, 1 GB sent, one request.
  EXPECT_EQ(p.of({.cpu_ns = 1'000'000'000}).usage_pusd, 11'244'444 + 200'000);
  EXPECT_EQ(p.of({.peak_memory_bytes = gb, .wall_ns = 1'000'000'000}).usage_pusd, 1'234'722 + 200'000);
  EXPECT_EQ(p.of({.network_bytes = gb}).usage_pusd, 90'000'000'000 + 200'000);
  EXPECT_EQ(p.of({.cpu_ns = 1'000'000'000, .peak_memory_bytes = gb, .wall_ns = 1'000'000'000,
                  .network_bytes = gb})
                .usage_pusd,
            11'244'444 + 1'234'722 + 90'000'000'000 + 200'000);
  // Lambda ignores what the sandbox used; usage ignores the configured memory.
  EXPECT_EQ(p.of({.cpu_ns = 1'000'000'000}).lambda_pusd, 200'000);
  EXPECT_EQ(p.of({.billed_ms = 1000, .memory_limit_bytes = gb}).usage_pusd, 200'000);
}

TEST(prices, memory_is_billed_in_whole_mb_rounded_up) {
  const prices p = per_mb_ms();
  EXPECT_EQ(p.of({.billed_ms = 1, .memory_limit_bytes = 128 * mb}).lambda_pusd, 128);
  EXPECT_EQ(p.of({.billed_ms = 1, .memory_limit_bytes = 128 * mb + 1}).lambda_pusd, 129);
  EXPECT_EQ(p.of({.billed_ms = 1, .memory_limit_bytes = 129 * mb - 1}).lambda_pusd, 129);
  EXPECT_EQ(p.of({.billed_ms = 1, .memory_limit_bytes = 1}).lambda_pusd, 1);
  EXPECT_EQ(p.of({.billed_ms = 3, .memory_limit_bytes = 0}).lambda_pusd, 0);
  EXPECT_EQ(p.of({.billed_ms = 7, .memory_limit_bytes = 10 * mb}).lambda_pusd, 70);
}

TEST(prices, each_cost_rounds_to_the_nearest_pusd_halves_up) {
  prices p;
  p.lambda_request_pusd = 0;
  p.usage_request_pusd = 0;
  const metered one_mb_ms{.billed_ms = 1, .memory_limit_bytes = mb};
  // 1 MB-ms costs price / 1,024,000.
  p.lambda_gb_second_pusd = 511'999;  // 0.4999990
  EXPECT_EQ(p.of(one_mb_ms).lambda_pusd, 0);
  p.lambda_gb_second_pusd = 512'000;  // 0.5
  EXPECT_EQ(p.of(one_mb_ms).lambda_pusd, 1);
  p.lambda_gb_second_pusd = 1'536'000;  // 1.5
  EXPECT_EQ(p.of(one_mb_ms).lambda_pusd, 2);
  p.lambda_gb_second_pusd = 2'559'999;  // 2.4999990
  EXPECT_EQ(p.of(one_mb_ms).lambda_pusd, 2);

  // 1 CPU-ns costs price / 1e9; the three usage parts are rounded one by one.
  p.usage_memory_gb_second_pusd = 0;
  p.usage_network_gb_pusd = 0;
  p.usage_cpu_second_pusd = 500'000'000;
  EXPECT_EQ(p.of({.cpu_ns = 1}).usage_pusd, 1);
  EXPECT_EQ(p.of({.cpu_ns = 3}).usage_pusd, 2);  // 1.5
  p.usage_cpu_second_pusd = 499'999'999;
  EXPECT_EQ(p.of({.cpu_ns = 1}).usage_pusd, 0);
  p.usage_cpu_second_pusd = 0;
  p.usage_network_gb_pusd = gb / 2;  // 1 byte: 0.5
  EXPECT_EQ(p.of({.network_bytes = 1}).usage_pusd, 1);
  p.usage_network_gb_pusd = gb / 2 - 1;
  EXPECT_EQ(p.of({.network_bytes = 1}).usage_pusd, 0);
  p.usage_network_gb_pusd = 0;
  p.usage_memory_gb_second_pusd = 1;  // 2^29 byte-s of 2^30: 0.5
  EXPECT_EQ(p.of({.peak_memory_bytes = gb / 2, .wall_ns = 1'000'000'000}).usage_pusd, 1);
  EXPECT_EQ(p.of({.peak_memory_bytes = gb / 2 - 1, .wall_ns = 1'000'000'000}).usage_pusd, 0);
}

TEST(prices, negative_quantities_cost_nothing_but_the_request) {
  const prices p;
  const auto c = p.of({.billed_ms = -5, .memory_limit_bytes = -1, .cpu_ns = -1, .peak_memory_bytes = -1,
                       .wall_ns = 1'000'000'000, .network_bytes = std::numeric_limits<int64_t>::min()});
  EXPECT_EQ(c.lambda_pusd, 200'000);
  EXPECT_EQ(c.usage_pusd, 200'000);
}

TEST(prices, large_quantities_are_exact_and_never_overflow) {
  const prices p;
  const int64_t big = 1'000'000'000'000'000;
  // 1e15 everywhere: cpu 1e6 s x 11,244,444 = 11,244,444,000,000; memory
  // round(1e15 x 1e15 x 1,234,722 / (2^30 x 1e9)) = 1,149,924,471,974,372,864; network
  // round(1e15 x 9e10 / 2^30) = 83,819,031,715,393,066; + 200,000.
  const auto c = p.of({.billed_ms = big, .memory_limit_bytes = big, .cpu_ns = big,
                       .peak_memory_bytes = big, .wall_ns = big, .network_bytes = big});
  EXPECT_EQ(c.usage_pusd, 1'233'754'748'133'965'930);
  // 1e15 ms x 953,674,317 MB is ~1.6e25 pUSD: more than int64 holds, so it stops there.
  EXPECT_EQ(c.lambda_pusd, int64_max);

  const auto top = p.of({int64_max, int64_max, int64_max, int64_max, int64_max, int64_max});
  EXPECT_EQ(top.lambda_pusd, int64_max);
  EXPECT_EQ(top.usage_pusd, int64_max);
  prices expensive;
  expensive.lambda_gb_second_pusd = int64_max;
  expensive.usage_memory_gb_second_pusd = int64_max;
  EXPECT_EQ(expensive.of({.billed_ms = 1, .memory_limit_bytes = mb}).lambda_pusd,
            int64_max / 1'024'000 + 1 + 200'000);  // 9,007,199,254,740.99... rounds up
  EXPECT_EQ(expensive.of({.peak_memory_bytes = gb, .wall_ns = 1'000'000'000}).usage_pusd, int64_max);
}

TEST(prices, parse_reads_every_price_exactly) {
  const prices p = prices::parse(R"(
lambda:                 # billed duration x configured memory
  gb_second: 0.0000166667
  request: "0.0000002"
usage:
  cpu_second: 1
  memory_gb_second: 0.000000000001
  network_gb: 0.09
  request: 9223372.036854775807
)",
                                 "p.yml");
  EXPECT_EQ(p.lambda_gb_second_pusd, 16'666'700);
  EXPECT_EQ(p.lambda_request_pusd, 200'000);
  EXPECT_EQ(p.usage_cpu_second_pusd, 1'000'000'000'000);
  EXPECT_EQ(p.usage_memory_gb_second_pusd, 1);
  EXPECT_EQ(p.usage_network_gb_pusd, 90'000'000'000);
  EXPECT_EQ(p.usage_request_pusd, int64_max);
  EXPECT_EQ(prices::parse("lambda: {gb_second: 0, request: 0.5}", "p.yml").lambda_request_pusd,
            500'000'000'000);
  EXPECT_EQ(prices::parse("usage: {cpu_second: 000.000000000010}", "p.yml").usage_cpu_second_pusd, 10);
}

TEST(prices, left_out_keys_keep_their_defaults) {
  const prices defaults;
  for (const char* empty : {"", "# no prices yet\n", "lambda:\n", "usage: {}\n", "{}"}) {
    const prices p = prices::parse(empty, "p.yml");
    EXPECT_EQ(p.lambda_gb_second_pusd, defaults.lambda_gb_second_pusd) << empty;
    EXPECT_EQ(p.usage_network_gb_pusd, defaults.usage_network_gb_pusd) << empty;
  }
  const prices p = prices::parse("usage:\n  network_gb: 0.05\n", "p.yml");
  EXPECT_EQ(p.usage_network_gb_pusd, 50'000'000'000);
  EXPECT_EQ(p.usage_cpu_second_pusd, defaults.usage_cpu_second_pusd);
  EXPECT_EQ(p.usage_memory_gb_second_pusd, defaults.usage_memory_gb_second_pusd);
  EXPECT_EQ(p.usage_request_pusd, defaults.usage_request_pusd);
  EXPECT_EQ(p.lambda_gb_second_pusd, defaults.lambda_gb_second_pusd);
  EXPECT_EQ(p.lambda_request_pusd, defaults.lambda_request_pusd);
}

TEST(prices, errors_name_the_file_line_and_field) {
  EXPECT_EQ(error_of("lambda:\n  gb_second: 0.0000166667\nusage:\n  cpu_secnd: 0.1\n"),
            "fnmesh.prices.yml:4: usage.cpu_secnd: unknown key (cpu_second, memory_gb_second, "
            "network_gb, request)");
  EXPECT_EQ(error_of("lambda: {}\nlamda:\n  request: 1\n"),
            "fnmesh.prices.yml:2: lamda: unknown key (lambda, usage)");
  EXPECT_EQ(error_of("lambda:\n  request: -0.1\n"),
            "fnmesh.prices.yml:2: lambda.request: must not be negative, got -0.1");
  EXPECT_EQ(error_of("\n\nusage:\n  network_gb: 0.0000000000001\n"),
            "fnmesh.prices.yml:4: usage.network_gb: has more than 12 decimal places, got 0.0000000000001");
  EXPECT_EQ(error_of("usage:\n  request: 9223372.036854775808\n"),
            "fnmesh.prices.yml:2: usage.request: is too large, got 9223372.036854775808");
  EXPECT_EQ(error_of("usage:\n  request: 99999999999999999999999999\n"),
            "fnmesh.prices.yml:2: usage.request: is too large, got 99999999999999999999999999");
  EXPECT_EQ(error_of("lambda:\n  gb_second:\n    usd: 1\n"),
            "fnmesh.prices.yml:2: lambda.gb_second: must be an amount of USD like 0.0000166667, got a map");
  EXPECT_EQ(error_of("lambda:\n  request:\n"),
            "fnmesh.prices.yml:2: lambda.request: must be an amount of USD like 0.0000166667, got nothing");
  EXPECT_EQ(error_of("lambda:\n  request: [1]\n"),
            "fnmesh.prices.yml:2: lambda.request: must be an amount of USD like 0.0000166667, got a list");
  for (const char* bad : {"abc", "1e-6", "0x10", ".5", "1.", "+1", "1.2.3", "1,5", "$0.2", "''", "0. 5"})
    EXPECT_EQ(error_of(std::string("lambda:\n  request: ") + bad + "\n"),
              std::string("fnmesh.prices.yml:2: lambda.request: must be an amount of USD like 0.0000166667, got ") +
                  (std::string(bad) == "''" ? "an empty string" : bad));
  EXPECT_EQ(error_of("lambda:\n  request: 1\n  request: 2\n"),
            "fnmesh.prices.yml:3: lambda.request: given twice");
  EXPECT_EQ(error_of("usage: 0.1\n"),
            "fnmesh.prices.yml:1: usage: must map cpu_second, memory_gb_second, network_gb, request to "
            "prices, got 0.1");
  EXPECT_EQ(error_of("- lambda\n"),
            "fnmesh.prices.yml:1: must map lambda and usage to their prices, got a list");
  EXPECT_EQ(error_of("lambda:\n  request: [1\n").rfind("fnmesh.prices.yml:3: not valid YAML: ", 0), 0u)
      << error_of("lambda:\n  request: [1\n");
}

TEST(prices, load_reads_a_file) {
  fnmesh::test::temp_dir dir;
  std::ofstream(dir / "prices.yml") << "lambda:\n  request: 0.0000004\n";
  EXPECT_EQ(prices::load(dir / "prices.yml").lambda_request_pusd, 400'000);
  std::ofstream(dir / "bad.yml") << "\nlambda:\n  request: free\n";
  try {
    prices::load(dir / "bad.yml");
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), (dir / "bad.yml").string() +
                                         ":3: lambda.request: must be an amount of USD like 0.0000166667, got free");
  }
  try {
    prices::load(dir / "missing.yml");
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), (dir / "missing.yml").string() + ": cannot read");
  }
}

TEST(prices, format_usd_is_exact) {
  EXPECT_EQ(format_usd(0), "0.000000000000");
  EXPECT_EQ(format_usd(12345), "0.000000012345");
  EXPECT_EQ(format_usd(-5), "-0.000000000005");
  EXPECT_EQ(format_usd(200'000), "0.000000200000");
  EXPECT_EQ(format_usd(1'000'000'000'000), "1.000000000000");
  EXPECT_EQ(format_usd(-1'500'000'000'000), "-1.500000000000");
  EXPECT_EQ(format_usd(123'456'789'012'345'678), "123456.789012345678");
  EXPECT_EQ(format_usd(int64_max), "9223372.036854775807");
  EXPECT_EQ(format_usd(std::numeric_limits<int64_t>::min()), "-9223372.036854775808");
}

}  // namespace
