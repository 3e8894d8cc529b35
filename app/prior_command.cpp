// `captioner prior`: store the mean feature of a model's training photos with the model, the
// "mean photo" that --mi-weight compares every photo with. Models trained by `captioner train`
// already carry one; this adds it to a model saved before they did.
#include <iostream>

#include "app/cli_util.h"
#include "app/commands.h"
#include "datasets/caption_dataset.h"
#include "decoder/caption_pipeline.h"
#include "decoder/install_paths.h"
#include "encoder/feature_cache.h"
#include "encoder/threading.h"

namespace captioner::cli {

namespace {
struct PriorOptions {
  std::string model;
  std::string captions;
  std::string images;
  std::filesystem::path cache_dir = default_cache_dir();
  int threads = 0;
  bool overwrite = false;
  bool quiet = false;
};

void run_prior(const PriorOptions& o) {
  set_threads(o.threads);
  const std::filesystem::path dir = o.model.empty() ? default_model_dir() : std::filesystem::path(o.model);
  ModelBundle model = ModelBundle::load(dir);
  if (model.image_prior.defined() && !o.overwrite) {
    throw std::runtime_error("model " + dir.string() + " already has an image prior (" +
                             std::to_string(model.image_prior_images) + " photos); --overwrite replaces it");
  }
  DatasetOptions dopt;
  dopt.image_dir = o.images;
  CaptionDataset data = load_caption_file(o.captions, dopt);
  for (const auto& w : data.warnings) std::cerr << "warning: " << w << "\n";
  // The photos the trainer averages: one per record, as it reads them.
  const auto files = data.image_paths();
  if (files.empty()) throw std::runtime_error(o.captions + " lists no images");

  Encoder encoder = Encoder::load(model.encoder_file);
  check_same_encoder(model.encoder, encoder.info(), "model " + dir.string());
  FeatureCacheOptions fo;
  fo.cache_dir = o.cache_dir;
  ProgressBar encoding("encoding", static_cast<int64_t>(files.size()), !o.quiet);
  fo.progress = [&](size_t done, size_t) { encoding.update(static_cast<int64_t>(done)); };
  FeatureSet feats = compute_features(encoder, files, fo);
  encoding.finish();
  for (const auto& f : feats.failures) std::cerr << "skipped " << f << "\n";
  feats.drop_unreadable();
  if (feats.features.size(0) == 0) throw std::runtime_error("none of the images of " + o.captions + " could be read");
  model.set_image_prior(feats.features);
  model.save_image_prior(dir);
  std::cerr << "wrote " << (dir / "image_prior.pt").string() << ": the mean feature of " << model.image_prior_images
            << " photos\n";
}
}  // namespace

void add_prior_command(CLI::App& app) {
  auto o = std::make_shared<PriorOptions>();
  auto* cmd = app.add_subcommand("prior", "Store the mean feature of a model's training photos in it (for --mi-weight)");
  cmd->option_defaults()->always_capture_default();
  cmd->add_option("--model", o->model, "Model directory (default: $CAPTIONER_MODEL, else models/default)");
  cmd->add_option("--captions", o->captions, "The model's training captions (COCO JSON, Karpathy JSON, Flickr8k token file)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--images", o->images, "Folder of the training images")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--cache-dir", o->cache_dir, "Where image features are cached (empty: no cache)");
  cmd->add_option("--threads", o->threads, "LibTorch threads (0: all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--overwrite", o->overwrite, "Replace an image prior the model already has");
  cmd->add_flag("--quiet,-q", o->quiet, "No progress bar");
  cmd->callback([o] { run_prior(*o); });
}

}  // namespace captioner::cli
