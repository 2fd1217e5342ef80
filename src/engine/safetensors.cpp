// safetensors validation. Layout: u64 LE header length N, N bytes of JSON
// {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"k": "v"}}, then the data section; offsets are relative to its start.
#include "engine/safetensors.h"

#include <algorithm>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"

namespace qeval {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // 100 MiB, as the reference implementation

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

std::optional<DType> dtype_from_name(std::string_view n) {
  if (n == "F32") return DType::F32;
  if (n == "F16") return DType::F16;
  if (n == "BF16") return DType::BF16;
  if (n == "F8_E4M3") return DType::F8_E4M3;
  if (n == "I8") return DType::I8;
  if (n == "I32") return DType::I32;
  if (n == "I64") return DType::I64;
  if (n == "U8") return DType::U8;
  return std::nullopt;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->source_ = path.string();
  f->map_.emplace(path);
  f->parse_impl(f->map_->bytes());
  return f;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::parse(std::span<const uint8_t> bytes, std::string source) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->source_ = std::move(source);
  f->parse_impl(bytes);
  return f;
}

void SafetensorsFile::parse_impl(std::span<const uint8_t> bytes) {
  const std::string& src = source_;
  if (bytes.size() < 8)
    fail("{}: file is {} bytes, too short for a safetensors header (truncated download?)", src, bytes.size());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > kMaxHeaderBytes)
    fail("{}: header size {} exceeds {} bytes (not a safetensors file?)", src, n, kMaxHeaderBytes);
  if (n > bytes.size() - 8)
    fail("{}: header size {} runs past the end of the {}-byte file (truncated?)", src, n, bytes.size());
  data_start_ = 8 + n;
  const uint64_t data_size = bytes.size() - data_start_;
  std::string_view header(reinterpret_cast<const char*>(bytes.data() + 8), n);

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: header is not valid JSON: {}", src, e.what());
  }
  if (!j.is_object()) fail("{}: header JSON is not an object", src);

  struct Range {
    uint64_t begin, end;
    size_t idx;
  };
  std::vector<Range> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail("{}: __metadata__ is not an object", src);
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail("{}: __metadata__.{} is not a string", src, m.key());
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail("{}: tensor {}: entry is not an object", src, name);
    auto d = v.find("dtype");
    if (d == v.end() || !d->is_string()) fail("{}: tensor {}: missing string field dtype", src, name);
    auto dt = dtype_from_name(d->get<std::string>());
    if (!dt)
      fail("{}: tensor {}: unsupported dtype {} (qeval reads F32, F16, BF16, F8_E4M3, I8, I32, I64, U8)", src,
           name, d->get<std::string>());
    auto s = v.find("shape");
    if (s == v.end() || !s->is_array()) fail("{}: tensor {}: missing array field shape", src, name);
    if (s->size() > 8) fail("{}: tensor {}: {} dimensions (at most 8 supported)", src, name, s->size());
    TensorView t;
    t.name = name;
    t.dtype = *dt;
    uint64_t numel = 1;
    for (const auto& dim : *s) {
      if (!dim.is_number_unsigned() && !(dim.is_number_integer() && dim.get<int64_t>() >= 0))
        fail("{}: tensor {}: shape entries must be non-negative integers, got {}", src, name, dim.dump());
      uint64_t dv = dim.get<uint64_t>();
      if (dv > (1ull << 62) || mul_overflows(numel, dv, &numel) || numel > (1ull << 62))
        fail("{}: tensor {}: shape {} overflows", src, name, s->dump());
      t.shape.push_back(static_cast<int64_t>(dv));
    }
    uint64_t nbytes;
    if (mul_overflows(numel, dtype_size(*dt), &nbytes)) fail("{}: tensor {}: byte size overflows", src, name);
    auto o = v.find("data_offsets");
    if (o == v.end() || !o->is_array() || o->size() != 2 || !(*o)[0].is_number_unsigned() ||
        !(*o)[1].is_number_unsigned())
      fail("{}: tensor {}: data_offsets must be [begin, end] non-negative integers", src, name);
    uint64_t b = (*o)[0].get<uint64_t>(), e = (*o)[1].get<uint64_t>();
    if (e < b) fail("{}: tensor {}: data_offsets end {} < begin {}", src, name, e, b);
    if (e - b != nbytes)
      fail("{}: tensor {}: shape {} x {} = {} bytes but data_offsets span {} bytes", src, name, s->dump(),
           dtype_name(*dt), nbytes, e - b);
    if (e > data_size)
      fail("{}: tensor {}: data_offsets [{}, {}] run past the {}-byte data section (truncated file?)", src, name,
           b, e, data_size);
    for (auto key = v.begin(); key != v.end(); ++key)
      if (key.key() != "dtype" && key.key() != "shape" && key.key() != "data_offsets")
        fail("{}: tensor {}: unknown field {}", src, name, key.key());
    t.data = bytes.data() + data_start_ + b;
    t.nbytes = static_cast<size_t>(nbytes);
    ranges.push_back({b, e, tensors_.size()});
    tensors_.push_back(std::move(t));
  }
  // Sorted by offset, contiguous: no overlap and no holes (the format forbids both).
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  std::vector<TensorView> ordered;
  ordered.reserve(tensors_.size());
  for (const auto& r : ranges) {
    const std::string& name = tensors_[r.idx].name;
    if (r.begin < pos) fail("{}: tensor {}: data [{}, {}] overlaps the previous tensor (ends at {})", src, name, r.begin, r.end, pos);
    if (r.begin > pos) fail("{}: tensor {}: gap of {} bytes before its data at {} (the format forbids holes)", src, name, r.begin - pos, r.begin);
    pos = r.end;
    ordered.push_back(std::move(tensors_[r.idx]));
  }
  if (pos != data_size)
    fail("{}: {} trailing bytes after the last tensor (data section is {} bytes)", src, data_size - pos, data_size);
  tensors_ = std::move(ordered);
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const TensorView* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::vector<std::string> SafetensorsIndex::files() const {
  std::set<std::string> s;
  for (const auto& [k, v] : weight_map) s.insert(v);
  return {s.begin(), s.end()};
}

SafetensorsIndex read_safetensors_index(const std::filesystem::path& index_json) {
  const std::string src = index_json.string();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(index_json));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", src, e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    fail("{}: missing object field weight_map", src);
  SafetensorsIndex idx;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string()) fail("{}: weight_map.{} is not a string", src, it.key());
    std::string file = it.value().get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos || file == "." ||
        file == "..")
      fail("{}: weight_map.{}: shard name '{}' must be a plain file name in the same directory", src, it.key(), file);
    idx.weight_map[it.key()] = file;
  }
  if (idx.weight_map.empty()) fail("{}: weight_map is empty", src);
  return idx;
}

}  // namespace qeval
