#include "runner/yaml_json.h"

#include <cerrno>
#include <cstdlib>

#include "core/error.h"

namespace qeval {

namespace {

nlohmann::json scalar_to_json(const YAML::Node& node) {
  const std::string& s = node.Scalar();
  if (node.Tag() == "!") return s;  // quoted: always a string
  if (s == "null" || s == "~" || s == "Null" || s == "NULL" || s.empty()) return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  char* end = nullptr;
  errno = 0;
  long long i = std::strtoll(s.c_str(), &end, 10);
  if (errno == 0 && end && *end == '\0' && end != s.c_str()) return i;
  errno = 0;
  double d = std::strtod(s.c_str(), &end);
  if (errno == 0 && end && *end == '\0' && end != s.c_str() &&
      s.find_first_of("0123456789") != std::string::npos)
    return d;
  return s;
}

}  // namespace

nlohmann::json yaml_to_json(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      return scalar_to_json(node);
    case YAML::NodeType::Sequence: {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& x : node) a.push_back(yaml_to_json(x));
      return a;
    }
    case YAML::NodeType::Map: {
      nlohmann::json o = nlohmann::json::object();
      for (const auto& kv : node) o[kv.first.as<std::string>()] = yaml_to_json(kv.second);
      return o;
    }
  }
  return nullptr;
}

nlohmann::json parse_yaml(const std::string& text, const std::string& source) {
  try {
    return yaml_to_json(YAML::Load(text));
  } catch (const YAML::Exception& e) {
    fail("{}:{}:{}: invalid YAML: {} (hint: check indentation and quoting)", source,
         e.mark.line + 1, e.mark.column + 1, e.msg);
  }
}

}  // namespace qeval
