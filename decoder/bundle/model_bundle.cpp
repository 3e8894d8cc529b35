#include "decoder/bundle/model_bundle.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "decoder/bundle/install_paths.h"
#include "datasets/file_io.h"
#include "datasets/json_util.h"

namespace captioner {

namespace fs = std::filesystem;
using nlohmann::json;

size_t ModelBundle::num_views() const {
  size_t n = 1;
  for (const auto& m : members) n = std::max(n, m.view + 1);
  return n;
}

const std::vector<std::string>& ModelBundle::decoder_precisions() {
  static const std::vector<std::string> names{"float32", "int8"};
  return names;
}

std::unique_ptr<SequenceScorer> ModelBundle::make_scorer(double mi_weight) const {
  auto model_scorer = [this]() -> std::unique_ptr<SequenceScorer> {
    std::vector<std::unique_ptr<SequenceScorer>> scorers;
    for (const auto& m : members) {
      const bool int8 = decoder_precision == "int8" && m.decoder->parameters().front().device().is_cpu();
      scorers.push_back(std::make_unique<DecoderScorer>(m.decoder, m.view, int8));
    }
    if (scorers.size() == 1) return std::move(scorers.front());
    return std::make_unique<EnsembleScorer>(std::move(scorers));
  };
  if (mi_weight <= 0) return model_scorer();
  if (!image_prior.defined()) {
    throw std::runtime_error(
        "mutual-information decoding (--mi-weight) needs the model's image prior, and this model has "
        "none: it was saved before models carried one; train it again (every `captioner train` stores its prior)");
  }
  return std::make_unique<MutualInformationScorer>(model_scorer(), model_scorer(), image_prior, mi_weight);
}

void ModelBundle::set_image_prior(const torch::Tensor& train_features) {
  if (!train_features.defined() || train_features.dim() != 2 || train_features.size(0) == 0) {
    throw std::invalid_argument("the image prior needs (N, D) training features");
  }
  image_prior = train_features.to(torch::kCPU, torch::kFloat).mean(0).contiguous();
  image_prior_images = train_features.size(0);
}

namespace {
// image_prior.pt and its config.json entry; null without a prior.
json write_image_prior(const ModelBundle& b, const fs::path& dir) {
  if (!b.image_prior.defined()) return nullptr;
  torch::serialize::OutputArchive archive;
  archive.write("mean_feature", b.image_prior.detach().to(torch::kCPU, torch::kFloat));
  save_archive_atomic(archive, dir / "image_prior.pt");
  return {{"file", "image_prior.pt"}, {"images", b.image_prior_images}};
}
}  // namespace

void ModelBundle::save(const fs::path& dir, bool fp16) const {
  if (members.empty()) throw std::invalid_argument("cannot save a model bundle without a decoder");
  fs::path target = fs::absolute(dir);
  fs::create_directories(target);
  // Every file is replaced atomically, config.json last: a crash leaves the previous bundle, or
  // the previous config with weights of the same layout from a later epoch; never a torn file.
  vocab.save(target / "vocab.json");
  json jm = json::array();
  std::vector<std::pair<const CaptionDecoderImpl*, std::string>> written;  // a decoder shared by views is stored once
  for (size_t i = 0; i < members.size(); ++i) {
    const CaptionDecoderImpl* impl = members[i].decoder.get();
    std::string name;
    for (const auto& [d, file] : written) {
      if (d == impl) name = file;
    }
    if (name.empty()) {
      name = "decoder" + (written.empty() ? std::string() : "-" + std::to_string(written.size() + 1)) + ".pt";
      auto decoder = members[i].decoder;
      save_decoder_weights(decoder, target / name, fp16);
      written.emplace_back(impl, name);
    }
    jm.push_back({{"weights", name},
                  {"dtype", fp16 ? "float16" : "float32"},
                  {"view", members[i].view},
                  {"decoder", members[i].decoder->config().to_json()}});
  }
  // The encoder is referenced, not copied: relative to the bundle when it lives nearby.
  fs::path enc = fs::absolute(encoder_file).lexically_normal();
  fs::path rel = enc.lexically_relative(target);
  json je = encoder.to_json();
  je["file"] = (!rel.empty() && rel.native().rfind("../../../", 0) != 0) ? rel.string() : enc.string();
  je["fingerprint"] = encoder.fingerprint();
  const json prior = write_image_prior(*this, target);
  json config{{"format", "captioner-model"},
              {"version", kFormatVersion},
              {"vocabulary", {{"file", "vocab.json"}, {"size", vocab.size()}, {"fingerprint", hex64(vocab.fingerprint())}}},
              {"encoder", je},
              {"members", jm},
              {"search", search_options_to_json(search)},
              {"decoder_precision", decoder_precision},
              {"training", training}};
  if (!prior.is_null()) config["image_prior"] = prior;
  write_file_atomic(target / "config.json", config.dump(1, ' ', false, json::error_handler_t::replace) + "\n");
}

namespace {

// config.json of a model folder, checked to be a captioner model this version can read.
json read_model_config(const fs::path& dir) {
  const fs::path config_file = dir / "config.json";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw std::runtime_error("model " + dir.string() + " not found (expected a directory with config.json; " +
                             "train one with `captioner train` or set --model)");
  }
  if (!fs::exists(config_file, ec)) throw std::runtime_error("model " + dir.string() + " has no config.json");
  json config = load_json_file(config_file);
  JsonView root(config, config_file.string(), "");
  if (!root.has("format") || root.at("format").as_string() != "captioner-model") {
    root.fail("not a captioner model (expected \"format\": \"captioner-model\")");
  }
  const int64_t version = root.at("version").as_int();
  if (version > ModelBundle::kFormatVersion) {
    root.at("version").fail("model format " + std::to_string(version) + " is newer than this captioner supports (" +
                            std::to_string(ModelBundle::kFormatVersion) + "); upgrade captioner");
  }
  return config;
}

// A file config.json names for the model's own parts (vocabulary, weights, image prior): a plain
// name inside the model folder. A path from a data file never leaves its folder: a downloaded
// model cannot make captioner open /etc/hostname or ../../other/decoder.pt.
std::string own_file(const JsonView& name) {
  const std::string file = name.as_string();
  if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos) {
    name.fail("\"" + file + "\" must name a file inside the model folder");
  }
  return file;
}

Vocabulary load_vocabulary(const fs::path& dir, const JsonView& jv) {
  const fs::path file = dir / own_file(jv.at("file"));
  Vocabulary vocab = Vocabulary::load(file);
  if (static_cast<int64_t>(vocab.size()) != jv.at("size").as_int() ||
      hex64(vocab.fingerprint()) != jv.at("fingerprint").as_string()) {
    jv.fail("vocabulary file " + file.string() + " (" + std::to_string(vocab.size()) +
            " tokens) is not the one this model was trained with (" + std::to_string(jv.at("size").as_int()) + " tokens)");
  }
  return vocab;
}

// The encoder file config.json names, relative to the model folder. A model folder copied
// elsewhere loses that relative path: then the same file among the installation's encoders (the
// identity check in load() proves it is the same).
fs::path locate_encoder(const fs::path& dir, const JsonView& je) {
  const fs::path enc = je.at("file").as_string();
  const fs::path file = enc.is_absolute() ? enc : (dir / enc).lexically_normal();
  std::error_code ec;
  if (fs::exists(file, ec)) return file;
  const fs::path installed = find_installed_file(fs::path("models/encoders") / enc.filename(), "");
  if (enc.is_absolute() || !fs::exists(installed, ec)) {
    throw std::runtime_error(
        "model " + dir.string() + " needs encoder " + file.string() + ", which does not exist (nor " + installed.string() +
        "): run scripts/setup.sh to build the default encoder, or fix \"encoder.file\" in " + (dir / "config.json").string());
  }
  return installed;
}

// The decoders config.json lists, each checked against the vocabulary and the encoder; a member
// that names an earlier member's weights (the mirrored view) shares its decoder.
std::vector<BundleMember> load_members(const fs::path& dir, const JsonView& members, const ModelBundle& b, torch::Device device) {
  if (members.array_size() == 0) members.fail("no decoders listed");
  std::vector<BundleMember> out;
  for (size_t i = 0; i < members.array_size(); ++i) {
    auto jm = members.at(i);
    DecoderConfig dc = DecoderConfig::from_json(jm.at("decoder").value(), members.file());
    if (dc.vocab_size != static_cast<int64_t>(b.vocab.size())) {
      jm.at("decoder").fail("decoder has " + std::to_string(dc.vocab_size) + " outputs but the vocabulary has " +
                            std::to_string(b.vocab.size()) + " tokens");
    }
    if (dc.feature_dim != b.encoder.feature_dim) {
      jm.at("decoder").fail("decoder expects " + std::to_string(dc.feature_dim) + "-d image features but the encoder gives " +
                            std::to_string(b.encoder.feature_dim));
    }
    BundleMember m;
    m.weights_file = own_file(jm.at("weights"));
    m.view = jm.has("view") ? static_cast<size_t>(jm.at("view").as_int()) : 0;
    if (m.view > 1) jm.at("view").fail("view must be 0 (photo) or 1 (mirrored)");
    for (const auto& prev : out) {
      if (prev.weights_file == m.weights_file) m.decoder = prev.decoder;  // one decoder, two views
    }
    if (!m.decoder) {
      m.decoder = CaptionDecoder(dc, Init::none);  // every weight comes from the file
      load_decoder_weights(m.decoder, dir / m.weights_file);
      m.decoder->to(device);
      m.decoder->eval();
    }
    out.push_back(std::move(m));
  }
  return out;
}

// The mean training feature that mutual-information decoding compares each photo with.
torch::Tensor load_image_prior(const fs::path& dir, const JsonView& jp, int64_t feature_dim) {
  const fs::path file = dir / own_file(jp.at("file"));
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    jp.fail(file.string() + " is missing: restore it, or remove \"image_prior\" from config.json (it serves --mi-weight)");
  }
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(file.string());
  } catch (const c10::Error& e) {
    jp.fail("cannot read " + file.string() + ": " + e.what_without_backtrace() + " (truncated or not a tensor file)");
  }
  torch::Tensor prior;
  if (!archive.try_read("mean_feature", prior) || prior.dim() != 1 || prior.size(0) != feature_dim) {
    jp.fail(file.string() + " does not hold a " + std::to_string(feature_dim) + "-d mean feature");
  }
  return prior.to(torch::kFloat);
}

}  // namespace

ModelBundle ModelBundle::load(const fs::path& dir, torch::Device device) {
  const json config = read_model_config(dir);
  const std::string origin = (dir / "config.json").string();
  const JsonView root(config, origin, "");
  ModelBundle b;
  b.vocab = load_vocabulary(dir, root.at("vocabulary"));
  b.encoder = EncoderInfo::from_json(config["encoder"], origin);
  b.encoder_file = locate_encoder(dir, root.at("encoder"));
  check_same_encoder(b.encoder, EncoderInfo::load_sidecar(b.encoder_file), "model " + dir.string());
  b.encoder.model_file = b.encoder_file;
  b.members = load_members(dir, root.at("members"), b, device);
  if (root.has("search")) b.search = search_options_from_json(config["search"], origin);
  if (root.has("decoder_precision")) {
    b.decoder_precision = root.at("decoder_precision").as_string();
    const auto& names = decoder_precisions();
    if (std::find(names.begin(), names.end(), b.decoder_precision) == names.end()) {
      root.at("decoder_precision").fail("must be \"" + names[0] + "\" or \"" + names[1] + "\"");
    }
  }
  if (root.has("image_prior")) {
    const auto jp = root.at("image_prior");
    b.image_prior = load_image_prior(dir, jp, b.encoder.feature_dim);
    b.image_prior_images = jp.has("images") ? jp.at("images").as_int() : 0;
  }
  if (b.search.mi_weight > 0 && !b.image_prior.defined()) root.at("search").fail("mi_weight needs an \"image_prior\"");
  b.search.repeat_exempt = b.vocab.function_word_ids();
  if (root.has("training")) b.training = config["training"];
  return b;
}

}  // namespace captioner
