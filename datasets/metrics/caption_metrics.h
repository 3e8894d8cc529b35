// Scores generated captions against references the way coco-caption's COCOEvalCap does:
// PTB-tokenize both sides, then BLEU-1..4, CIDEr-D and ROUGE-L. Also reads COCO results files.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "datasets/caption_dataset.h"

namespace captioner {

struct CaptionScores {
  std::array<double, 4> bleu{};
  double cider_d = 0;
  double rouge_l = 0;
  size_t images = 0;
  std::vector<std::array<double, 4>> bleu_per_image;
  std::vector<double> cider_per_image;
  std::vector<double> rouge_per_image;
};

struct MetricsOptions {
  bool bleu_only = false;  // skip CIDEr-D and ROUGE-L (validation during training)
};

// Raw captions in, scores out: hypotheses[i] against references[i].
CaptionScores score_captions(const std::vector<std::string>& hypotheses, const std::vector<std::vector<std::string>>& references,
                             const MetricsOptions& options = {});

// One caption's BLEU-1..4 against its references, tokenized as score_captions does (coco-caption's
// per-image BLEU depends on no other image, so a report can score row by row).
std::array<double, 4> image_bleu(const std::string& caption, const std::vector<std::string>& references);

// {"BLEU-1":..,"BLEU-2":..,"BLEU-3":..,"BLEU-4":..,"CIDEr-D":..,"ROUGE-L":..,"images":N}
nlohmann::json scores_to_json(const CaptionScores& scores);
std::string scores_table(const CaptionScores& scores);

struct CaptionResult {
  int64_t image_id = 0;
  std::string caption;
  std::string file_name;  // the photo, where the results name it (`captioner caption` output does)
};

// A COCO results file, [{"image_id": <id>, "caption": "..."}, ...], or any file `captioner
// caption` writes (.json with file names, .jsonl, .csv, .tsv); each image at most once.
std::vector<CaptionResult> load_coco_results(const std::filesystem::path& path);

// The results whose photo is among `references`, matched as evaluate_results matches them: for
// scoring a subset of the annotated photos without calling the results for the others unknown.
std::vector<CaptionResult> results_for(std::vector<CaptionResult> results, const CaptionDataset& references);

// Scores results against a dataset's references. Results that all name their photo are matched by
// file name (the last path component), so photos without numeric names can be scored; others by
// image_id. Every result must name an image of the dataset and every image of the dataset must
// have a result; otherwise the error lists the first few.
CaptionScores evaluate_results(const std::vector<CaptionResult>& results, const CaptionDataset& references,
                               const std::string& results_origin, const MetricsOptions& options = {});

}  // namespace captioner
