// Read-only memory mapping of a whole file (RAII). Checkpoint readers map their files once and
// hand out views into the mapping; streaming readers copy ranges out with read().
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

  // Copies bytes [offset, offset+len) of the file into `dst` with pread, without touching the
  // mapping. Streaming readers (the converter) use it: on virtual machines the first touch of
  // each mapped page costs a fault the guest cannot see (measured: the converter read 2x
  // faster this way), and the pages never enter this process's resident set. Throws Error
  // naming the file when the range is outside it or the read fails.
  void read(size_t offset, void* dst, size_t len) const;

 private:
  std::filesystem::path path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;  // kept open for read()
};

}  // namespace qeval
