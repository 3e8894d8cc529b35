#include "datasets/metrics/caption_metrics.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

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

std::vector<CaptionResult> load_coco_results(const std::filesystem::path& path) {
  json doc = load_json_file(path);
  JsonView root(doc, path.string(), "");
  root.expect_array();
  std::vector<CaptionResult> results;
  std::unordered_set<int64_t> seen;
  for (size_t i = 0; i < root.array_size(); ++i) {
    auto item = root.at(i).expect_object();
    CaptionResult r;
    r.image_id = item.at("image_id").as_int();
    r.caption = item.at("caption").as_string();
    if (!seen.insert(r.image_id).second) {
      item.at("image_id").fail("image " + std::to_string(r.image_id) + " has more than one caption");
    }
    results.push_back(std::move(r));
  }
  return results;
}

CaptionScores evaluate_results(const std::vector<CaptionResult>& results, const CaptionDataset& references,
                               const std::string& results_origin, const MetricsOptions& options) {
  std::unordered_map<int64_t, const CaptionRecord*> by_id;
  for (const auto& r : references.records) by_id.emplace(r.image_id, &r);

  auto list = [](const std::vector<int64_t>& ids) {
    std::string s;
    for (size_t i = 0; i < ids.size() && i < 5; ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
    if (ids.size() > 5) s += ", ... (" + std::to_string(ids.size()) + " in all)";
    return s;
  };
  std::vector<int64_t> unknown;
  std::unordered_set<int64_t> covered;
  for (const auto& r : results) {
    if (!by_id.count(r.image_id)) unknown.push_back(r.image_id);
    covered.insert(r.image_id);
  }
  if (!unknown.empty()) {
    throw std::runtime_error(results_origin + ": results for image ids not in " + references.source.string() + ": " +
                             list(unknown));
  }
  std::vector<int64_t> missing;
  for (const auto& r : references.records) {
    if (!covered.count(r.image_id)) missing.push_back(r.image_id);
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
    refs.push_back(by_id.at(r.image_id)->captions);
  }
  return score_captions(hyp, refs, options);
}

}  // namespace captioner
