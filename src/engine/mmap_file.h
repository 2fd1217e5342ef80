// Read-only memory mapping of a whole file (RAII). Checkpoint readers map their files once and
// hand out views into the mapping; the converter releases pages it has finished with.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>

namespace qeval {

class MappedFile {
 public:
  // Maps `path` read-only (PROT_READ, MAP_PRIVATE). An empty file maps to an empty span.
  // Throws Error naming the path and the OS reason when it cannot be opened or mapped.
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::filesystem::path& path() const { return path_; }

  // Tells the kernel the byte range [offset, offset+len) will not be needed soon, so its pages
  // leave this process's resident set (they stay readable; a later access faults them back
  // in). Used by streaming readers to bound RSS. Out-of-range parts are ignored.
  void release(size_t offset, size_t len) const;

 private:
  std::filesystem::path path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace qeval
