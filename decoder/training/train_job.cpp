#include "decoder/training/train_job.h"

#include <torch/torch.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>

#include "datasets/caption_dataset.h"
#include "datasets/file_io.h"
#include "datasets/tokenizer.h"
#include "decoder/kernels/bf16_matmul.h"
#include "decoder/bundle/install_paths.h"
#include "decoder/training/trainer.h"
#include "encoder/feature_cache.h"
#include "encoder/threading.h"

namespace captioner {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

CaptionDataset load_split(const fs::path& file, const fs::path& images, const fs::path& split_list,
                          const std::string& karpathy_split, size_t limit) {
  DatasetOptions o;
  o.image_dir = images;
  o.split_list = split_list;
  o.split = karpathy_split;
  CaptionDataset ds = load_caption_file(file, o);
  if (limit > 0 && ds.records.size() > limit) ds.records.resize(limit);
  if (ds.records.empty()) throw std::runtime_error(file.string() + ": no captioned images");
  return ds;
}

// Drops images that could not be read, reporting each.
void keep_readable(CaptionDataset& ds, FeatureSet& feats, const std::function<void(const std::string&)>& say) {
  for (const auto& f : feats.failures) {
    if (say) say("skipped unreadable image: " + f);
  }
  if (feats.failures.empty()) return;
  std::vector<CaptionRecord> records;
  for (int64_t row : feats.drop_unreadable()) records.push_back(std::move(ds.records[static_cast<size_t>(row)]));
  if (records.empty()) throw std::runtime_error(ds.source.string() + ": none of the images could be read");
  ds.records = std::move(records);
}

}  // namespace

// A folder that holds a model or another run is never replaced unless asked: `--output
// models/default` by mistake must not destroy the shipped model.
void check_output_dir(const TrainJob& job) {
  if (job.trainer.resume || job.overwrite) return;
  for (const char* name : {"config.json", "decoder.pt", "checkpoint.pt", "metrics.jsonl"}) {
    std::error_code ec;
    if (fs::exists(job.output_dir / name, ec)) {
      throw std::runtime_error("--output " + job.output_dir.string() + " already holds a model or run (" + name +
                               "): choose another folder, continue that run with --resume, or pass --overwrite to replace it");
    }
  }
}

namespace {

std::string text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// A dataset as the ranks must share it: the same photos (by name, in order) with the same captions.
std::string dataset_text(const CaptionDataset& ds) {
  uint64_t h = fnv1a64(ds.format);
  for (const auto& r : ds.records) {
    h = fnv1a64(r.file_name + '\0', h);
    for (const auto& c : r.captions) h = fnv1a64(c + '\0', h);
  }
  return std::to_string(ds.records.size()) + " photos, " + std::to_string(ds.num_captions()) + " captions, content " + hex64(h);
}

// Everything that shapes the trained model, by the flag that sets it, for the ranks of a
// data-parallel run to compare before they exchange anything sized by it (issue 27 D). Paths are
// compared by what they hold, not by name: each machine may keep the data elsewhere.
std::vector<DistributedGroup::Setting> settings_that_shape_the_model(const TrainJob& job, const TrainerOptions& t,
                                                                     const CaptionDataset& train, const CaptionDataset& val,
                                                                     const EncoderInfo& encoder, int world_size) {
  const DecoderConfig& d = job.decoder;
  return {{"the number of processes", std::to_string(world_size)},
          {"the training captions (--train-captions, --train-split, --max-train-images)", dataset_text(train)},
          {"the validation captions (--val-captions, --val-split, --max-val-images)", dataset_text(val)},
          {"the encoder (--encoder)", encoder.name + " " + encoder.fingerprint() + " weights " + encoder.weights_hash},
          {"--init-from", job.init_from.empty() ? "(none)" : "a model"},
          {"--text-captions, --text-epochs",
           job.text_captions.empty() ? "(none)" : job.text_captions.filename().string() + " " + std::to_string(job.text_epochs)},
          {"--min-word-count", std::to_string(job.min_word_count)},
          {"--max-caption-length", std::to_string(job.max_caption_length)},
          {"--cell", d.cell},
          {"--embed", std::to_string(d.embed_dim)},
          {"--hidden", std::to_string(d.hidden_dim)},
          {"--image-dim", std::to_string(d.image_dim)},
          {"--layers", std::to_string(d.num_layers)},
          {"--dropout", text(d.dropout)},
          {"--no-image-dropout", d.image_dropout ? "false" : "true"},
          {"--image-injection", std::string(d.image_every_step ? "every-step" : "") + (d.image_init_state ? "+init" : "")},
          {"--epochs", std::to_string(t.epochs)},
          {"--batch", std::to_string(t.batch_size)},
          {"--lr", text(t.learning_rate)},
          {"--lr-decay", text(t.lr_decay)},
          {"--lr-decay-every", std::to_string(t.lr_decay_every)},
          {"--weight-decay", text(t.weight_decay)},
          {"--clip", text(t.grad_clip)},
          {"--label-smoothing", text(t.label_smoothing)},
          {"--ema", text(t.ema_decay)},
          {"--patience", std::to_string(t.patience)},
          {"--flip-augment", t.flip_augment ? "true" : "false"},
          {"--seed", std::to_string(t.seed)},
          {"--checkpoint-every", std::to_string(t.checkpoint_every)},
          {"--resume", t.resume ? "true" : "false"},
          {"--bf16-products (as resolved on this CPU)", t.bf16_products ? "on" : "off"}};
}

bool resolve_bf16_products(const std::string& request, const torch::Device& device) {
  if (request == "off") return false;
  if (request == "on") {
    if (!device.is_cpu()) throw std::invalid_argument("--bf16-products on: bf16 products are for CPU training");
    return true;
  }
  if (request == "auto") return device.is_cpu() && bf16_products_native();
  throw std::invalid_argument("--bf16-products: expected auto, on or off, got '" + request + "'");
}

}  // namespace

namespace {

using Say = std::function<void(const std::string&)>;

void say_warnings(const std::vector<std::string>& warnings, const Say& say) {
  for (const auto& w : warnings) {
    if (say) say("warning: " + w);
  }
}

// Rank 0 owns the output folder and holds its lock until the run ends (one run per folder); the
// other ranks learn its verdict rather than waiting for it until the timeout.
std::unique_ptr<OutputLock> claim_output_dir(const TrainJob& job, DistributedGroup* group) {
  const bool main_rank = !group || group->is_main();
  std::string refusal;
  std::unique_ptr<OutputLock> lock;
  if (main_rank) {
    try {
      std::error_code ec;
      if (job.output_dir.has_parent_path()) fs::create_directories(job.output_dir.parent_path(), ec);
      lock = std::make_unique<OutputLock>(job.output_dir);
      check_output_dir(job);
    } catch (const std::exception& e) {
      refusal = e.what();
    }
  }
  if (group) refusal = group->broadcast_bytes(refusal);
  if (!refusal.empty()) throw std::runtime_error(main_rank ? refusal : "rank 0 refused to start: " + refusal);
  return lock;
}

// Fine-tuning: the starting model fixes the vocabulary and the decoder's shape, and can only
// continue on the features it was trained on. Loaded (and refused) before any image is encoded.
std::optional<ModelBundle> load_init_model(const TrainJob& job, const torch::Device& device) {
  if (job.init_from.empty()) return std::nullopt;
  ModelBundle init = ModelBundle::load(job.init_from, device);
  if (init.members.size() != 1 || init.members[0].view != 0) {
    throw std::runtime_error("--init-from " + job.init_from.string() +
                             ": can only continue from a single model, not an ensemble");
  }
  return init;
}

// Encodes (or reads from the cache) the photos of both splits; under several ranks each encodes
// its shard and the sums make every rank hold all of them.
std::pair<FeatureSet, FeatureSet> encode_splits(const TrainJob& job, Encoder& encoder, const CaptionDataset& train,
                                                const CaptionDataset& val, DistributedGroup* group, const TrainJobCallbacks& cb) {
  FeatureCacheOptions fo;
  fo.cache_dir = job.cache_dir;
  fo.batch_size = job.encoder_batch;
  fo.workers = job.loader_threads;
  if (group) {
    fo.shard_index = group->rank();
    fo.shard_count = group->world_size();
    fo.write_cache = group->is_main();
    fo.sum = [group](const std::vector<torch::Tensor>& t) { group->allreduce_sum(t); };
  }
  auto progress_of = [&](const std::string& what) {
    return [&cb, what](size_t done, size_t total) {
      if (cb.on_features) cb.on_features(what, done, total);
    };
  };
  fo.with_flipped = job.trainer.flip_augment;
  fo.progress = progress_of("train images");
  FeatureSet train_feats = compute_features(encoder, train.image_paths(), fo);
  fo.with_flipped = false;
  fo.progress = progress_of("validation images");
  FeatureSet val_feats = compute_features(encoder, val.image_paths(), fo);
  return {std::move(train_feats), std::move(val_feats)};
}

// The training captions as words (cut to max_caption_length), each with the row of its photo.
// Bracket tokens carry no meaning for a caption.
struct TokenizedCaptions {
  std::vector<std::vector<std::string>> words;
  std::vector<int64_t> image;
};

TokenizedCaptions tokenize_training_captions(const CaptionDataset& train, int max_caption_length) {
  TokenizerOptions topt;
  topt.keep_bracket_tokens = false;
  TokenizedCaptions out;
  for (size_t i = 0; i < train.records.size(); ++i) {
    for (const auto& c : train.records[i].captions) {
      auto tokens = tokenize_caption(c, topt);
      if (tokens.empty()) continue;
      if (static_cast<int>(tokens.size()) > max_caption_length) tokens.resize(max_caption_length);
      out.words.push_back(std::move(tokens));
      out.image.push_back(static_cast<int64_t>(i));
    }
  }
  return out;
}

// The model to train: the --init-from model's vocabulary and decoder, or a vocabulary built from
// the training captions and a freshly initialised decoder.
ModelBundle start_model(const TrainJob& job, std::optional<ModelBundle> init, const TokenizedCaptions& captions,
                        const Encoder& encoder, const fs::path& encoder_file, const torch::Device& device) {
  ModelBundle model;
  if (init) {
    check_same_encoder(init->encoder, encoder.info(), "--init-from " + job.init_from.string());
    model.vocab = init->vocab;
    model.members.push_back(init->members[0]);
    model.members[0].decoder->train();
  } else {
    model.vocab = Vocabulary::build(captions.words, job.min_word_count);
    if (model.vocab.size() <= Vocabulary::kNumSpecial) {
      throw std::runtime_error("no word occurs " + std::to_string(job.min_word_count) +
                               " times in the training captions: lower --min-word-count or add data");
    }
    DecoderConfig dc = job.decoder;
    dc.vocab_size = static_cast<int64_t>(model.vocab.size());
    dc.feature_dim = encoder.info().feature_dim;
    torch::manual_seed(job.trainer.seed);
    BundleMember member;
    member.decoder = CaptionDecoder(dc);
    member.decoder->to(device);
    model.members.push_back(member);
  }
  model.encoder = encoder.info();
  model.encoder_file = encoder_file;
  model.search = job.search;
  return model;
}

// What the bundle records of how it was trained (config.json's "training").
json training_record(const TrainJob& job, const TrainerOptions& options, const CaptionDataset& train, const CaptionDataset& val,
                     size_t captions_used) {
  json o = to_json(options);
  o["min_word_count"] = job.min_word_count;
  o["max_caption_length"] = job.max_caption_length;
  o["objective"] = "xe";
  o["init_from"] = job.init_from.string();
  if (!job.text_captions.empty()) {
    o["text_captions"] = job.text_captions.string();
    o["text_epochs"] = job.text_epochs;
  }
  return {
      {"command", job.command_line},
      {"train", {{"captions", job.train_captions.string()}, {"images", train.records.size()}, {"captions_used", captions_used}}},
      {"validation", {{"captions", job.val_captions.string()}, {"images", val.records.size()}}},
      {"options", std::move(o)}};
}

// The text phase (TrainJob::text_captions): captions whose photos are absent, read before any
// photo is encoded so that a bad file costs nothing.
std::optional<CaptionDataset> load_text_captions(const TrainJob& job) {
  if (job.text_captions.empty()) return std::nullopt;
  DatasetOptions o;
  o.check_images = false;  // text only: the photos are not expected
  o.split = job.karpathy_train_split;
  CaptionDataset text = load_caption_file(job.text_captions, o);
  if (text.records.empty()) throw std::runtime_error("--text-captions " + job.text_captions.string() + ": no captions");
  return text;
}

// Every text caption is paired with one all-zero feature row, so W_ih v vanishes and the decoder
// is a language model. A caption with a word outside the vocabulary is dropped rather than taught
// as <unk>.
TrainingData text_phase_data(const TrainJob& job, const CaptionDataset& text, const Vocabulary& vocab, int64_t feature_dim,
                             const Say& say) {
  const TokenizedCaptions words = tokenize_training_captions(text, job.max_caption_length);
  TrainingData data;
  for (const auto& caption : words.words) {
    auto ids = vocab.encode(caption);
    if (std::find(ids.begin(), ids.end(), Vocabulary::kUnk) != ids.end()) continue;
    data.captions.push_back(std::move(ids));
  }
  if (data.captions.empty()) {
    throw std::runtime_error("--text-captions " + job.text_captions.string() +
                             ": no caption uses only the words of the photos' captions");
  }
  data.caption_image.assign(data.captions.size(), 0);
  data.features = torch::zeros({1, feature_dim});
  if (say) {
    say("text phase: " + std::to_string(data.captions.size()) + " of " + std::to_string(words.words.size()) + " captions of " +
        job.text_captions.string() + " (the rest use words outside the vocabulary), " + std::to_string(job.text_epochs) +
        " epochs with the image term off");
  }
  return data;
}

// Runs the text phase as a Trainer of its own in <output_dir>/text_phase (checkpointed and
// resumable like any run). The decoder leaves it with the last epoch's weights, not those of the
// epoch whose photo captions scored best: without the image term, validation BLEU says little
// about a language model. Returns false when asked to stop (--resume continues the phase).
bool train_on_text(const TrainJob& job, const TrainerOptions& photo_options, ModelBundle& model, TrainingData data,
                   const ValidationData& val, const TrainJobCallbacks& cb) {
  TrainerOptions options = photo_options;
  options.epochs = job.text_epochs;
  options.patience = job.text_epochs + 1;
  options.flip_augment = false;
  options.ema_decay = 0;
  options.phase = "text";
  ModelBundle text_model = model;  // shares the decoder: the phase trains the photos' decoder
  text_model.training = {{"phase", "text"}, {"captions", job.text_captions.string()}, {"captions_used", data.captions.size()}};
  Trainer trainer(std::move(text_model), std::move(data), val, options, job.output_dir / "text_phase");
  const TrainResult r = trainer.run(cb.trainer);
  model.members[0].decoder->train();
  return !r.interrupted;
}

}  // namespace

TrainResult run_train_job(const TrainJob& requested, const TrainJobCallbacks& cb) {
  const auto& say = cb.trainer.on_message;
  TrainJob job = requested;
  // torchrun --max-restarts restarts the whole group when a rank dies: the new attempt continues
  // from the run's last checkpoint rather than refusing the folder its first attempt made.
  if (const int restart = torchrun_restart_count(); restart > 0 && !job.trainer.resume) {
    job.trainer.resume = true;
    if (say)
      say("torchrun restart " + std::to_string(restart) + ": resuming from the last checkpoint in " + job.output_dir.string());
  }
  std::unique_ptr<DistributedGroup> group = DistributedGroup::connect(job.distributed);
  const auto output_lock = claim_output_dir(job, group.get());
  CaptionDataset train =
      load_split(job.train_captions, job.train_images, job.train_split, job.karpathy_train_split, job.max_train_images);
  CaptionDataset val = load_split(job.val_captions, job.val_images, job.val_split, job.karpathy_val_split, job.max_val_images);
  const std::optional<CaptionDataset> text = load_text_captions(job);
  say_warnings(train.warnings, say);
  say_warnings(val.warnings, say);

  const torch::Device device = resolve_device(job.device);
  TrainerOptions options = job.trainer;
  options.bf16_products = resolve_bf16_products(job.bf16_products, device);
  ThreadPlan threads = ThreadPlan::choose(job.threads);
  // bf16 products run on oneDNN, whose threads are LibTorch's: give them every core (float32's
  // products run on OpenBLAS's own pool, beside a single LibTorch thread).
  if (options.bf16_products && job.threads == 0) threads.decoder = threads.encoder_alone;
  std::optional<ScopedTorchThreads> encoder_threads(std::in_place, threads.encoder_alone);
  auto init = load_init_model(job, device);
  // A fine-tuned model keeps its own encoder, not the installation's default.
  const fs::path encoder_file = !job.encoder_file.empty() ? job.encoder_file : init ? init->encoder_file : default_encoder_file();
  Encoder encoder = Encoder::load(encoder_file, device);
  // Before any collective sized by the data or the model: every rank must be asked the same.
  if (group) {
    group->check_same_settings(settings_that_shape_the_model(job, options, train, val, encoder.info(), group->world_size()));
  }
  auto [train_feats, val_feats] = encode_splits(job, encoder, train, val, group.get(), cb);
  encoder_threads.reset();
  ScopedTorchThreads decoder_threads(threads.decoder);
  say_warnings(train_feats.warnings, say);
  say_warnings(val_feats.warnings, say);
  keep_readable(train, train_feats, say);
  keep_readable(val, val_feats, say);

  // Vocabulary from the training captions only.
  TokenizedCaptions captions = tokenize_training_captions(train, job.max_caption_length);
  ModelBundle model = start_model(job, std::move(init), captions, encoder, encoder_file, device);
  TrainingData data;
  data.features = train_feats.features;
  data.flipped = train_feats.flipped;
  data.caption_image = std::move(captions.image);
  for (const auto& words : captions.words) data.captions.push_back(model.vocab.encode(words));
  ValidationData vdata;
  vdata.features = val_feats.features;
  for (const auto& r : val.records) vdata.references.push_back(r.captions);
  model.training = training_record(job, options, train, val, data.captions.size());

  std::optional<TrainingData> text_data;
  if (text && job.text_epochs > 0) text_data = text_phase_data(job, *text, model.vocab, train_feats.features.size(1), say);

  if (say && group) {
    say("data-parallel over " + std::to_string(group->world_size()) + " processes: each takes " +
        std::to_string(job.trainer.batch_size / group->world_size()) + " of every " + std::to_string(job.trainer.batch_size) +
        " captions");
  }
  if (say) {
    say("training on " + std::to_string(data.captions.size()) + " captions of " + std::to_string(train.records.size()) +
        " images; validating on " + std::to_string(val.records.size()) + " images; vocabulary " +
        std::to_string(model.vocab.size()) + " words; " + (device.is_cuda() ? "GPU" : "CPU"));
  }
  options.group = group.get();
  if (text_data && !train_on_text(job, options, model, std::move(*text_data), vdata, cb)) {
    TrainResult interrupted;
    interrupted.interrupted = true;
    return interrupted;
  }
  Trainer trainer(std::move(model), std::move(data), std::move(vdata), options, job.output_dir);
  return trainer.run(cb.trainer);
}

}  // namespace captioner
