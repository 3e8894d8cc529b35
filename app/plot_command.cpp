// `captioner plot`: draw a training run's loss and validation BLEU curves as a PNG.
#include <algorithm>
#include <cctype>
#include <iostream>

#include "app/cli_util.h"
#include "app/commands.h"
#include "datasets/training_plot.h"

namespace captioner::cli {

void add_plot_command(CLI::App& app) {
  auto input = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("plot", "Draw a training run's loss and validation BLEU curves as a PNG");
  cmd->add_option("run", *input, "A model directory written by `captioner train`, or its metrics.jsonl")->required();
  cmd->add_option("--output,-o", *output, "PNG file to write (default: <run>/curves.png)");
  cmd->callback([input, output] {
    std::filesystem::path in = *input;
    if (std::filesystem::is_directory(in)) in /= "metrics.jsonl";
    std::filesystem::path out = output->empty() ? in.parent_path() / "curves.png" : std::filesystem::path(*output);
    // A PNG is all it writes: a name that is not one (a run's metrics.jsonl or decoder.pt given by
    // mistake) would be replaced by a picture.
    std::string ext = out.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    if (ext != ".png") throw UsageError("plot --output " + out.string() + ": the plot is a PNG; name a .png file");
    refuse_outputs_over_inputs({{"--output", out.string()}}, {{"the metrics log", in.string()}});
    plot_training_metrics(in, out);
    std::cerr << "wrote " << out.string() << "\n";
  });
}

}  // namespace captioner::cli
