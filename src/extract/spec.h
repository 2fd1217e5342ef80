// Strict readers for small JSON specs (task YAML converted to JSON): unknown keys and wrong
// types are errors naming the file/field (`where`) and the key. Used by the filter, metric and
// task parsers.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace qeval::spec {

// Throws Error unless `j` is an object whose keys are all in `allowed`.
void check_keys(const nlohmann::json& j, std::initializer_list<std::string_view> allowed,
                const std::string& where);

// Typed getters: the value of `key` in object `j`, `def` when absent; Error naming
// "where.key" when present with the wrong type.
std::string get_string(const nlohmann::json& j, std::string_view key, const std::string& def,
                       const std::string& where);
int64_t get_int(const nlohmann::json& j, std::string_view key, int64_t def, const std::string& where);
bool get_bool(const nlohmann::json& j, std::string_view key, bool def, const std::string& where);
std::vector<std::string> get_string_list(const nlohmann::json& j, std::string_view key,
                                         const std::string& where);

// Required variants: Error "where: missing key" when absent.
std::string need_string(const nlohmann::json& j, std::string_view key, const std::string& where);
int64_t need_int(const nlohmann::json& j, std::string_view key, const std::string& where);

}  // namespace qeval::spec
