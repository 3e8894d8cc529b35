// `captioner merge`: join the parts that `captioner caption --shard K/N` wrote into one output.
#include <iostream>
#include <memory>

#include "app/cli_util.h"
#include "app/commands.h"
#include "datasets/caption_shards.h"
#include "datasets/caption_writer.h"
#include "datasets/file_io.h"

namespace captioner::cli {

void add_merge_command(CLI::App& app) {
  auto parts = std::make_shared<std::vector<std::string>>();
  auto output = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("merge", "Join the parts written by `caption --shard K/N` into one output");
  cmd->add_option("parts", *parts, "The part files (e.g. captions.part-*-of-4.json)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--output,-o", *output, "File to write (atomically)")->required();
  cmd->add_option("--format", *format, "json, jsonl, csv, tsv or text (default: from --output's extension, which must name one)")
      ->check(CLI::IsMember({"json", "jsonl", "csv", "tsv", "text"}));
  cmd->callback([parts, output, format] {
    const CaptionFormat out_format = format->empty() ? usage_format_for(*output) : parse_caption_format(*format);
    NamedPaths inputs;
    for (const auto& p : *parts) inputs.emplace_back("a part", p);
    refuse_outputs_over_inputs({{"--output", *output}}, inputs);
    std::vector<std::filesystem::path> files(parts->begin(), parts->end());
    const MergedCaptions merged = merge_caption_parts(files);
    OutputLock lock(*output);
    CaptionWriter writer(std::filesystem::path(*output), out_format);
    for (const auto& r : merged.rows) writer.write(r);
    writer.finish();
    for (const auto& photo : merged.unreadable) std::cerr << "not captioned (unreadable when its part ran): " << photo << "\n";
    std::cerr << "merged " << count_of(merged.rows.size(), "caption") << " from " << count_of(files.size(), "part") << " into "
              << *output << "\n";
    if (!merged.unreadable.empty()) g_exit_code = kExitSomeInputsFailed;  // as `caption` itself: not every photo has a caption
  });
}

}  // namespace captioner::cli
