// SafetensorsWriter: header from specs, sequential appends, fsync + rename on finish.
#include "engine/safetensors_writer.h"

#include <unistd.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace qeval {

uint64_t TensorSpec::nbytes() const {
  uint64_t n = dtype_size(dtype);
  for (auto d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

std::string safetensors_header(const std::vector<TensorSpec>& specs,
                               const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  for (const auto& s : specs) {
    if (h.contains(s.name)) fail("safetensors writer: duplicate tensor name {}", s.name);
    uint64_t n = s.nbytes();
    h[s.name] = {{"dtype", dtype_name(s.dtype)}, {"shape", s.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string json = h.dump();
  while (json.size() % 8) json += ' ';
  std::string out(8, '\0');
  uint64_t len = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xFF);
  return out + json;
}

SafetensorsWriter::SafetensorsWriter(const std::filesystem::path& path, std::vector<TensorSpec> specs,
                                     std::map<std::string, std::string> metadata)
    : path_(path), specs_(std::move(specs)) {
  for (const auto& s : specs_) ends_.push_back(total_ += s.nbytes());
  std::string header = safetensors_header(specs_, metadata);
  tmp_ = path_;
  tmp_ += ".partial";
  std::error_code ec;
  if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path(), ec);
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) fail("{}: cannot create (is the directory writable?)", tmp_.string());
  std::setvbuf(f_, nullptr, _IOFBF, 1 << 22);
  if (std::fwrite(header.data(), 1, header.size(), f_) != header.size())
    fail("{}: write failed (disk full?)", tmp_.string());
}

SafetensorsWriter::~SafetensorsWriter() {
  if (f_) std::fclose(f_);
  if (!done_) {
    std::error_code ec;
    std::filesystem::remove(tmp_, ec);
  }
}

void SafetensorsWriter::append(const void* data, size_t n) {
  if (n > total_ - written_)
    fail("{}: {} more bytes than the tensor specs describe (tensor {})", path_.string(), n - (total_ - written_),
         current());
  if (n && std::fwrite(data, 1, n, f_) != n) fail("{}: write failed (disk full?)", tmp_.string());
  written_ += n;
}

void SafetensorsWriter::write(const std::string& name, const void* data, size_t n) {
  size_t i = 0;
  while (i < specs_.size() && specs_[i].name != name) ++i;
  if (i == specs_.size()) fail("{}: tensor {} is not in the header", path_.string(), name);
  uint64_t begin = i ? ends_[i - 1] : 0;
  if (written_ != begin) fail("{}: tensor {} written out of order (next is '{}')", path_.string(), name, current());
  if (n != ends_[i] - begin)
    fail("{}: tensor {}: write of {} bytes, its spec says {}", path_.string(), name, n, ends_[i] - begin);
  append(data, n);
}

std::string SafetensorsWriter::current() const {
  auto it = std::upper_bound(ends_.begin(), ends_.end(), written_);
  return it == ends_.end() ? "" : specs_[it - ends_.begin()].name;
}

void SafetensorsWriter::finish() {
  if (written_ != total_)
    fail("{}: finished after {} of {} data bytes (next tensor {})", path_.string(), written_, total_, current());
  bool ok = std::fflush(f_) == 0;
  ok = fsync(fileno(f_)) == 0 && ok;
  ok = std::fclose(f_) == 0 && ok;
  f_ = nullptr;
  if (!ok) fail("{}: write failed (disk full?)", tmp_.string());
  std::error_code ec;
  std::filesystem::rename(tmp_, path_, ec);
  if (ec) fail("{}: cannot rename into place: {}", path_.string(), ec.message());
  done_ = true;
}

}  // namespace qeval
