#include "encoder/encoder_info.h"

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "datasets/file_io.h"
#include "datasets/json_util.h"

namespace captioner {

using nlohmann::json;

std::string EncoderInfo::fingerprint() const {
  json id = spec.to_json();
  id["arch"] = arch;
  id["feature_dim"] = feature_dim;
  id["source_sha256"] = source_sha256;
  id["name"] = name;
  if (precision != "float") id["precision"] = precision;  // float fingerprints stay as they were
  return hex64(fnv1a64(id.dump()));
}

json EncoderInfo::to_json() const {
  json j = spec.to_json();
  j["format"] = "captioner-encoder";
  j["version"] = 1;
  j["name"] = name;
  j["arch"] = arch;
  j["feature_dim"] = feature_dim;
  j["precision"] = precision;
  if (!source_sha256.empty()) j["source"] = {{"sha256", source_sha256}};
  if (!weights_hash.empty()) j["weights_hash"] = weights_hash;
  return j;
}

EncoderInfo EncoderInfo::from_json(const json& j, const std::string& origin) {
  JsonView root(j, origin, "");
  root.expect_object();
  if (!root.has("format") || root.at("format").as_string() != "captioner-encoder") {
    root.fail("not a captioner encoder sidecar (expected \"format\": \"captioner-encoder\")");
  }
  if (root.at("version").as_int() > 1) root.fail("encoder sidecar version is newer than this captioner understands");
  EncoderInfo info;
  info.name = root.has("name") ? root.at("name").as_string() : "";
  info.arch = root.has("arch") ? root.at("arch").as_string() : "";
  info.feature_dim = root.at("feature_dim").as_int();
  if (info.feature_dim <= 0) root.at("feature_dim").fail("must be positive");
  info.spec = PreprocessSpec::from_json(j, origin);
  if (root.has("source") && root.at("source").has("sha256")) info.source_sha256 = root.at("source").at("sha256").as_string();
  if (root.has("weights_hash")) info.weights_hash = root.at("weights_hash").as_string();
  if (root.has("precision")) {
    info.precision = root.at("precision").as_string();
    if (info.precision != "float" && info.precision != "int8") root.at("precision").fail("expected \"float\" or \"int8\"");
  }
  return info;
}

bool same_encoder(const EncoderInfo& a, const EncoderInfo& b) {
  if (a.fingerprint() != b.fingerprint()) return false;
  return a.weights_hash.empty() || b.weights_hash.empty() || a.weights_hash == b.weights_hash;
}

void check_same_encoder(const EncoderInfo& trained_with, const EncoderInfo& actual, const std::string& model_name) {
  if (same_encoder(trained_with, actual)) return;
  if (trained_with.fingerprint() != actual.fingerprint()) {
    throw std::runtime_error(model_name + " was trained on features of encoder \"" + trained_with.name + "\" (" +
                             trained_with.arch + ", " + std::to_string(trained_with.feature_dim) + "-d), not with " +
                             actual.model_file.string() + " (\"" + actual.name + "\", " + actual.arch + ", " +
                             std::to_string(actual.feature_dim) + "-d, or other preprocessing)");
  }
  throw std::runtime_error(actual.model_file.string() + " has other weights than the encoder " + model_name +
                           " was trained with (weights " + actual.weights_hash + ", expected " + trained_with.weights_hash +
                           "); re-create it with scripts/make_default_encoder.sh or retrain the model");
}

EncoderInfo EncoderInfo::load_sidecar(const std::filesystem::path& model_file) {
  std::filesystem::path sidecar = model_file;
  sidecar += ".json";
  std::error_code ec;
  if (!std::filesystem::exists(sidecar, ec)) {
    throw std::runtime_error("encoder " + model_file.string() + " has no preprocessing sidecar " + sidecar.string() +
                             ": create encoders with scripts/export_encoder.py or scripts/make_default_encoder.sh");
  }
  EncoderInfo info = from_json(load_json_file(sidecar), sidecar.string());
  info.model_file = model_file;
  return info;
}

}  // namespace captioner
