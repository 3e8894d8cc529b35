// `captioner ensemble`: combine models trained on the same captions into one that averages their
// word probabilities at every step (optionally also over the mirrored photo).
#include <iostream>

#include "app/cli_util.h"
#include "app/commands.h"
#include "datasets/file_io.h"
#include "decoder/bundle/ensemble.h"
#include "encoder/encoder.h"

namespace captioner::cli {

namespace {
struct EnsembleOptions {
  std::vector<std::string> models;
  std::string output;
  bool flip_tta = false;
  bool fp16 = false;
  bool overwrite = false;
  SearchOverrides search;  // the first model's defaults unless given
};

void run_ensemble(const EnsembleOptions& o) {
  if (o.output.empty()) throw UsageError("ensemble needs --output-dir DIR: the folder to write the ensemble model to");
  NamedPaths inputs;
  for (const auto& m : o.models) inputs.emplace_back("one of the models", m);
  refuse_outputs_over_inputs({{"--output-dir", o.output}}, inputs);
  // A folder that holds a model already is never replaced unless asked.
  std::error_code ec;
  if (!o.overwrite && std::filesystem::exists(std::filesystem::path(o.output) / "config.json", ec)) {
    throw UsageError("--output-dir " + o.output +
                     " already holds a model: choose another folder, or pass --overwrite to replace it");
  }
  std::vector<ModelBundle> parts;
  for (const auto& m : o.models) parts.push_back(ModelBundle::load(m));
  ModelBundle out = make_ensemble(std::move(parts), o.flip_tta);
  out.search = o.search.applied_to(out.search);
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
  cmd->add_option("--output-dir", o->output, "Ensemble model directory to write; required");
  cmd->add_flag("--overwrite", o->overwrite, "Replace a model already in --output-dir");
  add_old_spelling(*cmd, "--output", "--output-dir", o->output);
  cmd->add_flag("--flip-tta", o->flip_tta, "Also average over the mirrored photo (test-time augmentation)");
  cmd->add_flag("--fp16", o->fp16, "Store weights as float16");
  add_search_overrides(*cmd, o->search, "the first model's");
  cmd->callback([o] { run_ensemble(*o); });
}

}  // namespace captioner::cli
