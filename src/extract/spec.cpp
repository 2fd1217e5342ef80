// Strict JSON spec readers.
#include "extract/spec.h"

#include "core/error.h"

namespace qeval::spec {

namespace {

const nlohmann::json* find(const nlohmann::json& j, std::string_view key) {
  auto it = j.find(std::string(key));
  return it == j.end() ? nullptr : &*it;
}

}  // namespace

void check_keys(const nlohmann::json& j, std::initializer_list<std::string_view> allowed,
                const std::string& where) {
  if (!j.is_object()) fail("{}: expected a mapping, got {}", where, j.dump());
  for (const auto& [k, v] : j.items()) {
    bool ok = false;
    for (auto a : allowed) ok = ok || a == k;
    if (!ok) {
      std::string list;
      for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      fail("{}: unknown key '{}' (allowed: {})", where, k, list);
    }
  }
}

std::string get_string(const nlohmann::json& j, std::string_view key, const std::string& def,
                       const std::string& where) {
  const auto* v = find(j, key);
  if (!v) return def;
  if (!v->is_string()) fail("{}.{}: expected a string, got {}", where, key, v->dump());
  return v->get<std::string>();
}

int64_t get_int(const nlohmann::json& j, std::string_view key, int64_t def, const std::string& where) {
  const auto* v = find(j, key);
  if (!v) return def;
  if (!v->is_number_integer()) fail("{}.{}: expected an integer, got {}", where, key, v->dump());
  return v->get<int64_t>();
}

bool get_bool(const nlohmann::json& j, std::string_view key, bool def, const std::string& where) {
  const auto* v = find(j, key);
  if (!v) return def;
  if (!v->is_boolean()) fail("{}.{}: expected true or false, got {}", where, key, v->dump());
  return v->get<bool>();
}

std::vector<std::string> get_string_list(const nlohmann::json& j, std::string_view key,
                                         const std::string& where) {
  std::vector<std::string> out;
  const auto* v = find(j, key);
  if (!v) return out;
  if (!v->is_array()) fail("{}.{}: expected a list of strings, got {}", where, key, v->dump());
  for (const auto& e : *v) {
    if (!e.is_string()) fail("{}.{}: expected a list of strings, got element {}", where, key, e.dump());
    out.push_back(e.get<std::string>());
  }
  return out;
}

std::string need_string(const nlohmann::json& j, std::string_view key, const std::string& where) {
  if (!find(j, key)) fail("{}: missing key '{}'", where, key);
  return get_string(j, key, "", where);
}

int64_t need_int(const nlohmann::json& j, std::string_view key, const std::string& where) {
  if (!find(j, key)) fail("{}: missing key '{}'", where, key);
  return get_int(j, key, 0, where);
}

}  // namespace qeval::spec
