// Engine subcommands: convert (checkpoint formats), generate and bench (embedded engine).
#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "engine/convert.h"

namespace qeval {

void register_engine_commands(CLI::App& app, int& rc) {
  static ConvertOptions conv;
  static double shard_gb = 5.0;
  auto* c = app.add_subcommand("convert", "Convert a checkpoint: DeepSeek FP8 -> BF16 -> INT8 (formats SGLang loads)");
  c->add_option("--in", conv.in, "Input HF checkpoint directory (BF16/F16/F32 or DeepSeek FP8)")->required();
  c->add_option("--out", conv.out, "Output directory")->required();
  c->add_option("--to", conv.to, "Target format")
      ->required()
      ->check(CLI::IsMember({"bf16", "int8-block", "int8-channel", "fp8-block"}));
  c->add_flag("--verify", conv.verify, "Re-read the output and check every tensor");
  c->add_option("--shard-size-gb", shard_gb, "Maximum output shard size in GB (default 5)")->check(CLI::PositiveNumber);
  c->callback([&rc] {
    conv.shard_bytes = static_cast<uint64_t>(shard_gb * 1e9);
    if (std::string why = conv.validate(); !why.empty()) fail("convert: {}", why);
    rc = convert_main(conv);
  });
}

}  // namespace qeval
