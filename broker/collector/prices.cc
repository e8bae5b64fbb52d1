#include "broker/collector/prices.h"

#include <yaml-cpp/yaml.h>

#include <expected>
#include <fstream>
#include <limits>
#include <set>
#include <span>
#include <sstream>
#include <stdexcept>

#include "common/yaml_describe.h"

namespace fnmesh::collector {
namespace {

using u128 = unsigned __int128;

constexpr int64_t max_pusd = std::numeric_limits<int64_t>::max();
constexpr size_t fraction_digits = 12;
constexpr u128 bytes_per_gb = u128(1) << 30;
constexpr u128 ns_per_s = 1'000'000'000;

struct price_key {
  std::string_view name;
  int64_t prices::*member;
};

constexpr price_key lambda_keys[] = {
    {"gb_second", &prices::lambda_gb_second_pusd},
    {"request", &prices::lambda_request_pusd},
};
constexpr price_key usage_keys[] = {
    {"cpu_second", &prices::usage_cpu_second_pusd},
    {"memory_gb_second", &prices::usage_memory_gb_second_pusd},
    {"network_gb", &prices::usage_network_gb_pusd},
    {"request", &prices::usage_request_pusd},
};

struct section {
  std::string_view name;
  std::span<const price_key> keys;
};

constexpr section sections[] = {{"lambda", lambda_keys}, {"usage", usage_keys}};

template <class T>
std::string names_of(std::span<const T> items) {
  std::string out;
  for (const T& item : items) out += (out.empty() ? "" : ", ") + std::string(item.name);
  return out;
}

[[noreturn]] void fail(const std::string& file, const YAML::Node& at, std::string_view field,
                       const std::string& what) {
  const YAML::Mark m = at.Mark();
  throw std::runtime_error(file + ":" + std::to_string(m.is_null() ? 1 : m.line + 1) + ": " +
                           (field.empty() ? "" : std::string(field) + ": ") + what);
}

// Calls on(item, key, value) for each entry of `map`, item being the one of `items` it names;
// an unknown or repeated key is an error. Errors name the key's line.
template <class T, class F>
void for_each_entry(const std::string& file, const YAML::Node& map, const std::string& prefix,
                    std::span<const T> items, F&& on) {
  std::set<std::string> seen;
  for (auto it = map.begin(); it != map.end(); ++it) {
    const std::string name = it->first.IsScalar() ? it->first.Scalar() : describe_yaml(it->first);
    const T* item = nullptr;
    for (const T& candidate : items)
      if (candidate.name == name) item = &candidate;
    if (!item) fail(file, it->first, prefix + name, "unknown key (" + names_of(items) + ")");
    if (!seen.insert(name).second) fail(file, it->first, prefix + name, "given twice");
    on(*item, it->first, it->second);
  }
}

// Digits, optionally a point and more digits.
bool is_decimal(std::string_view s) {
  const auto digits = [](std::string_view d) {
    return !d.empty() && d.find_first_not_of("0123456789") == std::string_view::npos;
  };
  const size_t point = s.find('.');
  return digits(s.substr(0, point)) && (point == std::string_view::npos || digits(s.substr(point + 1)));
}

// "0.0000166667" -> 16'666'700.
std::expected<int64_t, std::string> parse_usd(const YAML::Node& n) {
  const std::string_view text = n.IsScalar() ? std::string_view(n.Scalar()) : std::string_view();
  if (text.starts_with('-') && is_decimal(text.substr(1)))
    return std::unexpected("must not be negative, got " + std::string(text));
  if (!is_decimal(text))
    return std::unexpected("must be an amount of USD like 0.0000166667, got " + describe_yaml(n));
  const size_t point = text.find('.');
  const std::string_view whole = text.substr(0, point);
  const std::string_view fraction = point == std::string_view::npos ? "" : text.substr(point + 1);
  if (fraction.size() > fraction_digits)
    return std::unexpected("has more than 12 decimal places, got " + std::string(text));
  u128 pusd = 0;
  for (char c : whole) {
    pusd = pusd * 10 + u128(c - '0');
    if (pusd > u128(max_pusd)) break;
  }
  for (size_t i = 0; i < fraction_digits; ++i)
    pusd = pusd * 10 + u128(i < fraction.size() ? fraction[i] - '0' : 0);
  if (pusd > u128(max_pusd)) return std::unexpected("is too large, got " + std::string(text));
  return int64_t(pusd);
}

void read_section(const std::string& file, const section& s, const YAML::Node& key,
                  const YAML::Node& value, prices& out) {
  if (value.IsNull()) return;
  if (!value.IsMap())
    fail(file, key, s.name, "must map " + names_of(s.keys) + " to prices, got " + describe_yaml(value));
  const std::string prefix = std::string(s.name) + ".";
  for_each_entry(file, value, prefix, s.keys,
                 [&](const price_key& k, const YAML::Node& at, const YAML::Node& v) {
                   auto pusd = parse_usd(v);
                   if (!pusd) fail(file, at, prefix + std::string(k.name), pusd.error());
                   out.*k.member = *pusd;
                 });
}

uint64_t non_negative(int64_t v) { return v < 0 ? 0 : uint64_t(v); }

// round(quantity * price / per), halves up, capped at max_pusd. With quantity = q * per + r,
// q * price is only taken when it fits and r * price < 2^60 * 2^63, so nothing overflows.
int64_t cost(u128 quantity, int64_t price, u128 per) {
  const u128 p = non_negative(price);
  const u128 q = quantity / per, r = quantity % per;
  if (q != 0 && p > u128(max_pusd) / q) return max_pusd;
  const u128 v = q * p + (r * p + per / 2) / per;
  return v > u128(max_pusd) ? max_pusd : int64_t(v);
}

int64_t sum(std::initializer_list<int64_t> parts) {
  u128 total = 0;
  for (int64_t part : parts) total += non_negative(part);
  return total > u128(max_pusd) ? max_pusd : int64_t(total);
}

}  // namespace

prices prices::load(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error(file.string() + ": cannot read");
  std::ostringstream text;
  text << in.rdbuf();
  return parse(text.str(), file.string());
}

prices prices::parse(std::string_view yaml, const std::string& file) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(file + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML: " + e.msg);
  }
  prices out;
  if (root.IsNull()) return out;
  if (!root.IsMap())
    fail(file, root, "", "must map lambda and usage to their prices, got " + describe_yaml(root));
  for_each_entry(file, root, "", std::span<const section>(sections),
                 [&](const section& s, const YAML::Node& key, const YAML::Node& value) {
                   read_section(file, s, key, value, out);
                 });
  return out;
}

costs prices::of(const metered& m) const noexcept {
  const u128 memory_mb = (u128(non_negative(m.memory_limit_bytes)) + (1 << 20) - 1) >> 20;
  const u128 mb_ms = u128(non_negative(m.billed_ms)) * memory_mb;
  const u128 byte_ns = u128(non_negative(m.peak_memory_bytes)) * non_negative(m.wall_ns);
  return {
      .lambda_pusd = sum({cost(mb_ms, lambda_gb_second_pusd, 1000 * 1024), lambda_request_pusd}),
      .usage_pusd = sum({cost(non_negative(m.cpu_ns), usage_cpu_second_pusd, ns_per_s),
                         cost(byte_ns, usage_memory_gb_second_pusd, bytes_per_gb * ns_per_s),
                         cost(non_negative(m.network_bytes), usage_network_gb_pusd, bytes_per_gb),
                         usage_request_pusd}),
  };
}

std::string format_usd(int64_t pusd) {
  const uint64_t magnitude = pusd < 0 ? 0 - uint64_t(pusd) : uint64_t(pusd);
  const std::string fraction = std::to_string(magnitude % pusd_per_usd);
  return (pusd < 0 ? "-" : "") + std::to_string(magnitude / pusd_per_usd) + "." +
         std::string(fraction_digits - fraction.size(), '0') + fraction;
}

}  // namespace fnmesh::collector
