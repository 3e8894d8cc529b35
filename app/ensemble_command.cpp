// `captioner ensemble`: combine models trained on the same captions into one that averages their
// word probabilities at every step (optionally also over the mirrored photo).
#include <iostream>

#include "app/commands.h"
#include "datasets/file_io.h"
#include "decoder/model_bundle.h"
#include "encoder/encoder.h"

namespace captioner::cli {

namespace {
struct EnsembleOptions {
  std::vector<std::string> models;
  std::string output;
  bool flip_tta = false;
  bool fp16 = false;
  int beam = 0;
  double length_penalty = -1;
  int block_ngram = -1;
};

void run_ensemble(const EnsembleOptions& o) {
  std::vector<ModelBundle> parts;
  for (const auto& m : o.models) parts.push_back(ModelBundle::load(m));
  ModelBundle out = make_ensemble(std::move(parts), o.flip_tta);
  if (o.beam > 0) out.search.beam_size = o.beam;
  if (o.length_penalty >= 0) out.search.length_penalty = o.length_penalty;
  if (o.block_ngram >= 0) out.search.block_ngram_repeat = o.block_ngram;
  out.training["ensemble"]["models"] = o.models;
  // Record the encoder's weights (models from before the hash was kept lack it), after checking
  // that the encoder on disk is the one the models name.
  Encoder encoder = Encoder::load(out.encoder_file);
  check_same_encoder(out.encoder, encoder.info(), o.models.front());
  out.encoder.weights_hash = encoder.info().weights_hash;
  OutputLock lock(o.output);
  out.save(o.output, o.fp16);
  std::cerr << "wrote " << o.output << ": " << out.members.size() << " scorers over " << out.num_views() << " view(s)\n";
}
}  // namespace

void add_ensemble_command(CLI::App& app) {
  auto o = std::make_shared<EnsembleOptions>();
  auto* cmd = app.add_subcommand("ensemble", "Combine models trained on the same captions into one ensemble model");
  cmd->option_defaults()->always_capture_default();
  cmd->add_option("models", o->models, "Model directories (same vocabulary and encoder)")->required()->expected(1, -1);
  cmd->add_option("--output", o->output, "Ensemble model directory to write")->required();
  cmd->add_flag("--flip-tta", o->flip_tta, "Also average over the mirrored photo (test-time augmentation)");
  cmd->add_flag("--fp16", o->fp16, "Store weights as float16");
  cmd->add_option("--beam", o->beam, "Default beam width (default: the first model's)")->check(CLI::Range(1, 64));
  cmd->add_option("--length-penalty", o->length_penalty, "Default length penalty (default: the first model's)");
  cmd->add_option("--block-ngram", o->block_ngram, "Default n-gram blocking (default: the first model's)");
  cmd->callback([o] { run_ensemble(*o); });
}

}  // namespace captioner::cli
