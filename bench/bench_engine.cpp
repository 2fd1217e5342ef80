// Engine speed on a random-weight model of a real shape (default Qwen2.5-0.5B): prefill and
// decode tokens/s at batch 1 and 16, and decode weight bandwidth (bytes read per step × steps/s).
// Usage: bench_engine [shape=qwen2.5-0.5b] [dtype=bf16] [quantization=none] [threads=2]
//                     [batch=both: 1 and 16] [gen tokens]
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/engine_commands.h"

int main(int argc, char** argv) {
  try {
    std::string shape = argc > 1 ? argv[1] : "qwen2.5-0.5b";
    std::string dtype = argc > 2 ? argv[2] : "bf16";
    std::string quant = argc > 3 ? argv[3] : "none";
    int threads = argc > 4 ? std::atoi(argv[4]) : 2;
    std::vector<int> batches = {1, 16};
    if (argc > 5) batches = {std::atoi(argv[5])};
    for (int batch : batches) {
      qeval::BenchCommand c;
      c.model = "random:" + shape;
      c.dtype = dtype;
      c.quantization = quant;
      c.threads = threads;
      c.batch = batch;
      c.prompt_tokens = batch == 1 ? 512 : 64;
      c.gen_tokens = argc > 6 ? std::atoi(argv[6]) : batch == 1 ? 32 : 16;
      c.json = true;
      qeval::run_bench_command(c, std::cout);
    }
  } catch (const qeval::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
