// `captioner eval`: score a COCO results file against COCO annotations, or caption a split with a
// model and score that.
#include <iostream>
#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "datasets/caption_dataset.h"
#include "datasets/metrics/caption_metrics.h"

namespace captioner::cli {

namespace {
struct EvalOptions {
  std::string results;
  std::string annotations;
  bool json = false;
};

void run_eval(const EvalOptions& opt) {
  DatasetOptions dopt;
  dopt.check_images = false;
  CaptionDataset refs = load_caption_file(opt.annotations, dopt);
  auto results = load_coco_results(opt.results);
  CaptionScores scores = evaluate_results(results, refs, opt.results);
  if (opt.json) {
    std::cout << scores_to_json(scores).dump() << "\n";
  } else {
    std::cout << scores_table(scores);
  }
}
}  // namespace

void add_eval_command(CLI::App& app) {
  auto opt = std::make_shared<EvalOptions>();
  auto* cmd = app.add_subcommand("eval", "Score captions against reference captions (BLEU-1..4, CIDEr-D, ROUGE-L)");
  cmd->add_option("--results", opt->results, "COCO results file: [{\"image_id\": id, \"caption\": \"...\"}]")
      ->check(CLI::ExistingFile);
  cmd->add_option("--annotations", opt->annotations, "Reference captions (COCO JSON, Karpathy JSON or Flickr8k token file)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_flag("--json", opt->json, "Print one JSON object instead of a table");
  cmd->callback([opt] {
    if (opt->results.empty()) throw CLI::RequiredError("--results");
    run_eval(*opt);
  });
}

}  // namespace captioner::cli
