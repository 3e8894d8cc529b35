// `captioner eval`: score a COCO results file against reference captions, or caption a dataset's
// images with a model and score that.
#include <algorithm>
#include <iostream>
#include <optional>
#include <unordered_set>
#include <nlohmann/json.hpp>

#include "app/cli_util.h"
#include "app/commands.h"
#include "datasets/caption_dataset.h"
#include "datasets/file_io.h"
#include "datasets/metrics/caption_metrics.h"
#include "decoder/bundle/install_paths.h"
#include "decoder/pipeline/caption_pipeline.h"
#include "encoder/threading.h"

namespace captioner::cli {

namespace {
struct EvalOptions {
  std::string results;
  std::string annotations;
  std::string model;
  std::string images;
  std::string split_list;
  std::string karpathy_split = "val";
  std::string output;
  std::string device = "auto";
  std::string decoder_precision;  // empty: the model's
  SearchOverrides search;
  std::filesystem::path cache_dir = default_cache_dir();
  int batch = 4;
  int threads = 0;
  int loader_threads = 2;
  size_t max_images = 0;
  bool json = false;
  bool quiet = false;
};

void print_scores(const CaptionScores& scores, bool as_json) {
  if (as_json) {
    std::cout << scores_to_json(scores).dump() << "\n";
  } else {
    std::cout << scores_table(scores);
  }
}

// Captions the dataset's images with a model; returns COCO-style results for the images that
// could be read (the others leave `refs` too). Features go through the feature cache, so
// evaluating several decoding settings encodes the images only once.
std::vector<CaptionResult> caption_dataset(const EvalOptions& o, CaptionDataset& refs) {
  set_threads(o.threads);
  torch::Device device = resolve_device(o.device);
  const std::filesystem::path model_dir = o.model.empty() ? default_model_dir() : std::filesystem::path(o.model);
  ModelBundle model = ModelBundle::load(model_dir, device);
  if (!o.decoder_precision.empty()) model.decoder_precision = o.decoder_precision;
  Encoder encoder = Encoder::load(model.encoder_file, device);  // caption_files_cached checks it is the model's

  CachedCaptionOptions co;
  co.search = o.search.applied_to(model.search);
  co.threads = ThreadPlan::choose(o.threads);
  co.features.cache_dir = o.cache_dir;
  co.features.batch_size = o.batch;
  co.features.workers = o.loader_threads;
  const auto files = refs.image_paths();
  ProgressBar encoding("encoding", static_cast<int64_t>(files.size()), !o.quiet);
  std::optional<ProgressBar> captioning;  // sized once the readable images are known
  // Ctrl-C / SIGTERM: scores of part of a split are not the split's scores, so none are printed.
  auto stop_if_asked = [] {
    if (stop_requested()) throw Interrupted("no scores (eval scores the whole split or nothing)");
  };
  co.features.progress = [&](size_t done, size_t) {
    stop_if_asked();
    encoding.update(static_cast<int64_t>(done));
  };
  co.decode_progress = [&](size_t done, size_t total) {
    stop_if_asked();
    encoding.finish();
    if (!captioning) captioning.emplace("captioning", static_cast<int64_t>(total), !o.quiet);
    captioning->update(static_cast<int64_t>(done));
  };
  CaptionedFiles captioned = caption_files_cached(model, encoder, files, co);
  stop_if_asked();
  encoding.finish();
  if (captioning) captioning->finish();
  for (const auto& f : captioned.failures) std::cerr << "skipped " << f << "\n";
  for (const auto& w : captioned.warnings) std::cerr << "warning: " << w << "\n";
  if (!captioned.failures.empty()) {
    std::cerr << "warning: " << captioned.failures.size() << " of " << files.size()
              << " images could not be read; scoring the other " << captioned.rows.size() << "\n";
    g_exit_code = kExitSomeInputsFailed;
  }
  if (!captioned.tags.empty() && !o.quiet) {
    size_t tagged = 0;
    for (const auto& t : captioned.tags) tagged += t.has_value();
    std::cerr << "tags guided " << tagged << " of " << captioned.tags.size() << " captions\n";
  }
  std::vector<CaptionRecord> kept;
  std::vector<CaptionResult> results;
  for (size_t k = 0; k < captioned.rows.size(); ++k) {
    kept.push_back(std::move(refs.records[captioned.rows[k]]));
    results.push_back({kept.back().image_id, model.vocab.caption_text(captioned.captions[k].tokens)});
  }
  refs.records = std::move(kept);
  return results;
}

void run_eval(const EvalOptions& o) {
  refuse_outputs_over_inputs({{"--output", o.output}}, {{"--annotations", o.annotations}, {"--results", o.results}});
  install_stop_handlers();  // also where a shell started it with SIGINT ignored (a background job)
  if (o.results.empty() == o.images.empty()) {
    throw UsageError("give either --results (score a results file) or --images (caption with a model, then score)");
  }
  DatasetOptions dopt;
  dopt.check_images = !o.images.empty();
  dopt.image_dir = o.images;
  dopt.split_list = o.split_list;
  dopt.split = o.karpathy_split;
  CaptionDataset refs = load_caption_file(o.annotations, dopt);
  const bool truncated = o.max_images > 0 && refs.records.size() > o.max_images;
  if (truncated) refs.records.resize(o.max_images);
  for (const auto& w : refs.warnings) std::cerr << "warning: " << w << "\n";

  std::vector<CaptionResult> results;
  std::string origin = o.results;
  if (!o.results.empty()) {
    results = load_coco_results(o.results);
    if (truncated) {
      // --max-images N scores the first N annotated images: the results for the others are
      // simply not asked for (they are not "missing from the annotations").
      const size_t before = results.size();
      results = results_for(std::move(results), refs);
      if (!o.quiet) {
        std::cerr << "scoring the first " << refs.records.size() << " images of " << o.annotations << " ("
                  << before - results.size() << " results for other images left out)\n";
      }
    }
  } else {
    std::optional<OutputLock> output_lock;
    if (!o.output.empty()) output_lock.emplace(o.output);
    results = caption_dataset(o, refs);
    origin = "captions of " + (o.model.empty() ? default_model_dir().string() : o.model);
    if (!o.output.empty()) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& r : results) out.push_back({{"image_id", r.image_id}, {"caption", r.caption}});
      write_file_atomic(o.output, out.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    }
  }
  print_scores(evaluate_results(results, refs, origin), o.json);
}
}  // namespace

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  auto* cmd = app.add_subcommand("eval", "Score captions against references (BLEU-1..4, CIDEr-D, ROUGE-L as coco-caption)");
  cmd->option_defaults()->always_capture_default();
  cmd->add_option("--annotations", o->annotations, "Reference captions: COCO JSON, Karpathy JSON or Flickr8k token file")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--results", o->results,
                  "Score this results file: COCO's [{\"image_id\": id, \"caption\": \"...\"}] or any `captioner caption` "
                  "output (matched by file name)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--images", o->images, "Caption the annotated images in this folder with --model, then score")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--model", o->model, "Model directory (default: $CAPTIONER_MODEL, else models/default)");
  cmd->add_option("--val-split", o->split_list, "Flickr8k token file only: list of the images to evaluate")
      ->check(CLI::ExistingFile);
  add_old_spelling(*cmd, "--split-list", "--val-split", o->split_list);
  cmd->add_option("--karpathy-split", o->karpathy_split, "Karpathy JSON only: split to evaluate");
  cmd->add_option("--max-images", o->max_images, "Evaluate only the first N images (0: all)");
  cmd->add_option("--output,-o", o->output, "With --images: also write the captions as a COCO results file (JSON)");
  add_search_overrides(*cmd, o->search, "the model's");
  add_decoder_precision_option(*cmd, o->decoder_precision);
  cmd->add_option("--cache-dir", o->cache_dir, "Where image features are cached (empty: no cache)");
  cmd->add_option("--encoder-batch", o->batch, "Images per encoder call (4 is fastest for MobileNetV2 on few cores)")
      ->check(CLI::Range(1, 1024));
  add_old_spelling(*cmd, "--batch", "--encoder-batch", o->batch);
  cmd->add_option("--threads", o->threads, "LibTorch threads for encoder and decoder (0: all cores to encode, 1 to decode)")
      ->check(CLI::Range(0, 256));
  cmd->add_option("--loader-threads", o->loader_threads, "Image decoding threads")->check(CLI::Range(1, 64));
  cmd->add_option("--device", o->device, "cpu, cuda or auto");
  cmd->add_flag("--json", o->json, "Print one JSON object instead of a table");
  cmd->add_flag("--quiet,-q", o->quiet, "No progress bar");
  cmd->callback([o] { run_eval(*o); });
}

}  // namespace captioner::cli
