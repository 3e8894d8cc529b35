#include "datasets/metrics/caption_metrics.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "datasets/caption_writer.h"
#include "datasets/json_util.h"
#include "datasets/metrics/bleu.h"
#include "datasets/metrics/cider.h"
#include "datasets/metrics/rouge.h"
#include "datasets/tokenizer.h"

namespace captioner {

using nlohmann::json;

std::array<double, 4> image_bleu(const std::string& caption, const std::vector<std::string>& references) {
  std::vector<std::string> refs;
  for (const auto& r : references) refs.push_back(tokenize_caption_joined(r));
  return metrics::compute_bleu({tokenize_caption_joined(caption)}, {refs}).per_image[0];
}

CaptionScores score_captions(const std::vector<std::string>& hypotheses, const std::vector<std::vector<std::string>>& references,
                             const MetricsOptions& options) {
  if (hypotheses.size() != references.size()) {
    throw std::invalid_argument(std::to_string(hypotheses.size()) + " captions but " + std::to_string(references.size()) +
                                " reference sets");
  }
  std::vector<std::string> hyp;
  std::vector<std::vector<std::string>> refs(references.size());
  hyp.reserve(hypotheses.size());
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    hyp.push_back(tokenize_caption_joined(hypotheses[i]));
    for (const auto& r : references[i]) refs[i].push_back(tokenize_caption_joined(r));
  }
  CaptionScores s;
  s.images = hyp.size();
  auto bleu = metrics::compute_bleu(hyp, refs);
  s.bleu = bleu.bleu;
  s.bleu_per_image = std::move(bleu.per_image);
  if (!options.bleu_only) {
    auto cider = metrics::compute_cider_d(hyp, refs);
    s.cider_d = cider.cider_d;
    s.cider_per_image = std::move(cider.per_image);
    auto rouge = metrics::compute_rouge_l(hyp, refs);
    s.rouge_l = rouge.rouge_l;
    s.rouge_per_image = std::move(rouge.per_image);
  }
  return s;
}

json scores_to_json(const CaptionScores& s) {
  return json{{"BLEU-1", s.bleu[0]},  {"BLEU-2", s.bleu[1]},  {"BLEU-3", s.bleu[2]}, {"BLEU-4", s.bleu[3]},
              {"CIDEr-D", s.cider_d}, {"ROUGE-L", s.rouge_l}, {"images", s.images}};
}

std::string scores_table(const CaptionScores& s) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "metric    score\n"
                "BLEU-1    %.4f\n"
                "BLEU-2    %.4f\n"
                "BLEU-3    %.4f\n"
                "BLEU-4    %.4f\n"
                "CIDEr-D   %.4f\n"
                "ROUGE-L   %.4f\n"
                "images    %zu\n",
                s.bleu[0], s.bleu[1], s.bleu[2], s.bleu[3], s.cider_d, s.rouge_l, s.images);
  return buf;
}

namespace {
// Results are matched to references by file name (the last path component) when every result
// names its photo, else by image_id; the key of a result or a reference either way.
bool match_by_name(const std::vector<CaptionResult>& results) {
  return !results.empty() &&
         std::all_of(results.begin(), results.end(), [](const CaptionResult& r) { return !r.file_name.empty(); });
}
template <typename Row>
std::string match_key(const Row& row, bool by_name) {
  return by_name ? std::filesystem::path(row.file_name).filename().string() : std::to_string(row.image_id);
}
}  // namespace

std::vector<CaptionResult> load_coco_results(const std::filesystem::path& path) {
  std::vector<CaptionResult> results;
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".jsonl" || ext == ".csv" || ext == ".tsv" || ext == ".txt") {
    for (auto& row : read_caption_file(path)) results.push_back({row.image_id, std::move(row.caption), std::move(row.file_name)});
  } else {
    json doc = load_json_file(path);
    JsonView root(doc, path.string(), "");
    root.expect_array();
    for (size_t i = 0; i < root.array_size(); ++i) {
      auto item = root.at(i).expect_object();
      CaptionResult r;
      r.caption = item.at("caption").as_string();
      if (item.has("file_name")) r.file_name = item.at("file_name").as_string();
      if (item.has("image_id") || r.file_name.empty()) r.image_id = item.at("image_id").as_int();
      results.push_back(std::move(r));
    }
  }
  const bool by_name = match_by_name(results);
  std::unordered_set<std::string> seen;
  for (const auto& r : results) {
    const std::string key = match_key(r, by_name);
    if (!seen.insert(key).second) {
      throw std::runtime_error(path.string() + ": image " + key + " has more than one caption");
    }
  }
  return results;
}

std::vector<CaptionResult> results_for(std::vector<CaptionResult> results, const CaptionDataset& references) {
  const bool by_name = match_by_name(results);
  std::unordered_set<std::string> wanted;
  for (const auto& r : references.records) wanted.insert(match_key(r, by_name));
  results.erase(std::remove_if(results.begin(), results.end(),
                               [&](const CaptionResult& r) { return wanted.count(match_key(r, by_name)) == 0; }),
                results.end());
  return results;
}

CaptionScores evaluate_results(const std::vector<CaptionResult>& results, const CaptionDataset& references,
                               const std::string& results_origin, const MetricsOptions& options) {
  const bool by_name = match_by_name(results);
  auto key_of_result = [&](const CaptionResult& r) { return match_key(r, by_name); };
  auto key_of_record = [&](const CaptionRecord& r) { return match_key(r, by_name); };
  std::unordered_map<std::string, const CaptionRecord*> by_key;
  for (const auto& r : references.records) by_key.emplace(key_of_record(r), &r);

  auto list = [](const std::vector<std::string>& keys) {
    std::string s;
    for (size_t i = 0; i < keys.size() && i < 5; ++i) s += (i ? ", " : "") + keys[i];
    if (keys.size() > 5) s += ", ... (" + std::to_string(keys.size()) + " in all)";
    return s;
  };
  const std::string what = by_name ? "photos" : "image ids";
  std::vector<std::string> unknown;
  std::unordered_set<std::string> covered;
  for (const auto& r : results) {
    const std::string key = key_of_result(r);
    if (!by_key.count(key)) unknown.push_back(key);
    covered.insert(key);
  }
  if (!unknown.empty()) {
    throw std::runtime_error(results_origin + ": results for " + what + " not in " + references.source.string() + ": " +
                             list(unknown));
  }
  std::vector<std::string> missing;
  for (const auto& r : references.records) {
    if (!covered.count(key_of_record(r))) missing.push_back(key_of_record(r));
  }
  if (!missing.empty()) {
    throw std::runtime_error(results_origin + ": no result for " + std::to_string(missing.size()) + " of " +
                             std::to_string(references.records.size()) + " images of " + references.source.string() + ": " +
                             list(missing));
  }
  std::vector<std::string> hyp;
  std::vector<std::vector<std::string>> refs;
  for (const auto& r : results) {
    hyp.push_back(r.caption);
    refs.push_back(by_key.at(key_of_result(r))->captions);
  }
  return score_captions(hyp, refs, options);
}

}  // namespace captioner
