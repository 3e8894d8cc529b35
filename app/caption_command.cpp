// `captioner caption`: write a sentence for every photo in the given folders and files.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <unordered_map>

#include "app/cli_util.h"
#include "app/commands.h"
#include "datasets/caption_dataset.h"
#include "datasets/caption_shards.h"
#include "datasets/caption_writer.h"
#include "datasets/file_io.h"
#include "datasets/html_report.h"
#include "datasets/metrics/caption_metrics.h"
#include "decoder/pipeline/caption_pipeline.h"
#include "decoder/bundle/install_paths.h"
#include "encoder/image_files.h"
#include "encoder/image_loader.h"

namespace captioner::cli {

namespace {
struct CaptionOptions {
  std::vector<std::string> inputs;
  std::string files_from;  // a file listing photos, one path per line
  std::string model;
  std::string output;
  std::string format;
  std::string html;
  std::string annotations;
  std::string device = "auto";
  std::string decoder_precision;  // empty: the model's
  SearchOverrides search;         // the model's defaults unless given
  bool sample = false;
  double temperature = 1.0;
  int top_k = 0;
  uint64_t seed = 0;
  int batch = 32;
  int threads = 0;
  int loader_threads = 2;
  int64_t max_pixels = 100'000'000;
  bool recursive = false;
  bool resume = false;
  bool quiet = false;
  std::string shard;  // "K/N"; empty: $RANK/$WORLD_SIZE under torchrun, else everything
};

// Photo paths, one per line, from another program ("-": standard input) or a --files-from list.
// Each is taken as a photo named explicitly; blank lines are skipped, a line is at most 4096 bytes.
void read_path_list(std::istream& in, const std::string& origin, std::vector<std::string>& out) {
  std::string line;
  for (size_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line.find_first_not_of(" \t") == std::string::npos) {
      throw std::runtime_error(origin + ":" + std::to_string(n) + ": a line of only spaces (a path must name a file)");
    }
    if (line.size() > 4096) throw std::runtime_error(origin + ":" + std::to_string(n) + ": a path longer than 4096 bytes");
    out.push_back(line);
  }
  if (in.bad()) throw std::runtime_error("cannot read " + origin);
}

std::vector<std::string> expand_inputs(const CaptionOptions& o) {
  std::vector<std::string> inputs;
  for (const auto& in : o.inputs) {
    if (in == "-") {
      read_path_list(std::cin, "standard input", inputs);
    } else {
      inputs.push_back(in);
    }
  }
  if (!o.files_from.empty()) {
    std::ifstream list(o.files_from);
    if (!list) throw std::runtime_error("cannot read --files-from " + o.files_from + ": " + std::strerror(errno));
    read_path_list(list, o.files_from, inputs);
  }
  if (inputs.empty() && o.inputs.empty() && o.files_from.empty()) {
    throw UsageError("give photos or folders, - (paths on standard input) or --files-from LIST");
  }
  return inputs;
}

// The photos to caption, every input's problem named on stderr; empty when there is nothing to
// caption (then the exit code is set or an error thrown that says why).
ImageFileList collect_photos(const CaptionOptions& o, const std::vector<std::string>& inputs) {
  ImageFileList list = collect_images(inputs, o.recursive);
  for (const auto& p : list.problems) std::cerr << "error: " << p << "\n";
  if (list.images.empty()) {
    if (!list.problems.empty()) {  // each input's problem is already named above
      g_exit_code = kExitSomeInputsFailed;
      return list;
    }
    std::string where;
    for (const auto& in : inputs) where += (where.empty() ? "" : ", ") + in;
    if (inputs.empty()) where = o.files_from.empty() ? "standard input" : o.files_from;
    throw std::runtime_error(
        "no images found in " + where +
        (list.skipped_non_images ? " (" + count_of(list.skipped_non_images, "other file") + ")" : "") +
        (list.skipped_folders ? "; use --recursive to look in its " + count_of(list.skipped_folders, "subfolder") : ""));
  }
  if (list.skipped_folders > 0 && !o.quiet) {
    std::cerr << "note: " << count_of(list.skipped_folders, "subfolder") << " not entered (--recursive enters them)\n";
  }
  return list;
}

// This process's photos under --shard K/N (or torchrun's RANK/WORLD_SIZE): every N-th one, with
// image ids from the whole list so that the parts of one run agree.
struct ShardPhotos {
  std::vector<std::filesystem::path> photos;
  std::vector<int64_t> image_ids;
  ShardManifest manifest;  // what this part is asked to do, for `captioner merge` to check
};

ShardPhotos take_shard(const std::vector<std::filesystem::path>& all, const ShardSpec& shard) {
  ShardPhotos mine;
  const std::vector<int64_t> all_ids = image_ids_for(all);
  mine.manifest.shard = shard;
  mine.manifest.total_photos = all.size();
  mine.manifest.run_fingerprint = photo_list_fingerprint(all);
  for (size_t i = 0; i < all.size(); ++i) {
    if (static_cast<int>(i % static_cast<size_t>(shard.count)) != shard.index) continue;
    mine.photos.push_back(all[i]);
    mine.manifest.photos.push_back(all[i].string());
    mine.image_ids.push_back(all_ids[i]);
  }
  return mine;
}

// Where the captions go and in which format: a file (this shard's part of it), or stdout.
struct OutputPlan {
  std::string file;  // empty: standard output
  CaptionFormat format = CaptionFormat::kText;
};

OutputPlan plan_output(const CaptionOptions& o, const ShardSpec& shard) {
  // `-o -`: JSON lines on standard output, each written as soon as it is made.
  const bool lines_to_stdout = o.output == "-";
  if (lines_to_stdout && (o.resume || shard.sharded())) {
    throw UsageError("-o - streams to standard output: --resume and --shard need an output file");
  }
  OutputPlan plan;
  plan.file = lines_to_stdout ? "" : o.output;
  plan.format = !o.format.empty()    ? parse_caption_format(o.format)
                : lines_to_stdout    ? CaptionFormat::kJsonl
                : !plan.file.empty() ? usage_format_for(plan.file)
                                     : CaptionFormat::kText;
  if (shard.sharded()) {
    if (plan.file.empty()) throw UsageError("--shard needs --output: each part is written to its own file, then merged");
    if (!o.html.empty()) throw UsageError("--html is not available with --shard; merge the parts, then caption for a report");
    plan.file = shard_part_file(plan.file, shard).string();
  }
  return plan;
}

// An output that is one of the photos would replace the photo with captions.
void refuse_outputs_that_are_photos(const std::vector<std::string>& targets, const std::vector<std::filesystem::path>& photos) {
  for (const auto& target : targets) {
    std::error_code ec;
    if (target.empty() || !std::filesystem::exists(target, ec)) continue;
    for (const auto& photo : photos) {
      if (std::filesystem::equivalent(photo, target, ec)) {
        throw std::runtime_error(target + " is one of the photos to caption; write the captions to another file");
      }
    }
  }
}

CaptionPipelineOptions pipeline_options(const CaptionOptions& o, const ModelBundle& model) {
  CaptionPipelineOptions po;
  po.thumbnail_size = o.html.empty() ? 0 : 320;
  po.batch_size = o.batch;
  po.loader_threads = o.loader_threads;
  po.threads = ThreadPlan::choose(o.threads);
  po.image.max_pixels = o.max_pixels;
  po.search = o.search.applied_to(model.search);
  po.search.sample = o.sample;
  po.search.temperature = o.temperature;
  po.search.top_k = o.top_k;
  po.search.seed = o.seed;
  return po;
}

// "beam 3, length penalty 0.5, ...": the settings that made a report's captions, for its header.
std::string describe_search(const SearchOptions& s) {
  char text[256];
  if (s.sample) {
    std::snprintf(text, sizeof text, "sampled (temperature %g, top-k %d, seed %llu)", s.temperature, s.top_k,
                  static_cast<unsigned long long>(s.seed));
  } else {
    std::string tags;
    if (s.tag_threshold > 0) tags += ", tags at confidence " + std::to_string(s.tag_threshold).substr(0, 4);
    if (s.subject_threshold > 0) tags += ", animal subjects at " + std::to_string(s.subject_threshold).substr(0, 4);
    std::snprintf(text, sizeof text, "beam %d, length penalty %g, at most %d words%s", s.beam_size, s.length_penalty,
                  s.max_length, tags.c_str());
  }
  return text;
}

// --html: the page, and with --annotations each photo's references, BLEU-4 and the corpus scores.
class ReportBuilder {
 public:
  ReportBuilder(const CaptionOptions& o, const std::string& model_name, const SearchOptions& search, size_t photos)
      : annotations_(o.annotations) {
    ReportHeader header;
    header.title = "captioner: " + count_of(photos, "photo");
    header.model = model_name;
    header.settings = describe_search(search);
    header.made_at = local_time_now();
    report_ = std::make_unique<HtmlReport>(std::filesystem::path(o.html), header);
    if (!o.annotations.empty()) {
      DatasetOptions dopt;
      dopt.check_images = false;
      refs_ = load_caption_file(o.annotations, dopt);
      for (const auto& r : refs_.records) by_name_[std::filesystem::path(r.file_name).filename().string()] = &r;
    }
  }

  void add(const std::filesystem::path& file, const std::string& caption, double log_prob, std::string thumbnail,
           const std::string& tag, double tag_probability) {
    ReportRow row{file.string(), caption, log_prob, std::move(thumbnail), {}, std::nullopt, tag, tag_probability};
    auto it = by_name_.find(file.filename().string());
    if (it != by_name_.end()) {
      row.references = it->second->captions;
      row.bleu4 = image_bleu(caption, row.references)[3];
      hypotheses_.push_back(caption);
      references_.push_back(row.references);
    }
    report_->add(row);
  }

  // A resumed run's page shows every caption of the output, not only this run's: the earlier
  // rows come from the file, their thumbnails from the photos (none where a photo is gone).
  void add_earlier(const std::vector<CaptionRow>& rows, const CaptionPipelineOptions& po) {
    ImageLoader thumbnail_loader(PreprocessSpec{}, po.image);
    for (const auto& r : rows) {
      std::string thumbnail;
      try {
        thumbnail = make_thumbnail(thumbnail_loader.decode(r.file_name), po.thumbnail_size);
      } catch (const ImageError&) {
      }
      add(r.file_name, r.caption, r.log_prob, std::move(thumbnail), r.tag, r.tag_probability);
    }
  }

  void finish() {
    std::vector<std::string> summary;
    if (!hypotheses_.empty()) {
      auto sc = score_captions(hypotheses_, references_);
      char line[160];
      std::snprintf(line, sizeof line, "%s with references: BLEU-1 %.4f  BLEU-4 %.4f  CIDEr-D %.4f  ROUGE-L %.4f",
                    count_of(hypotheses_.size(), "photo").c_str(), sc.bleu[0], sc.bleu[3], sc.cider_d, sc.rouge_l);
      summary.push_back(line);
    } else if (!annotations_.empty()) {
      summary.push_back("no captioned photo is named in " + annotations_);
    }
    report_->finish(summary);
  }

 private:
  std::string annotations_;
  std::unique_ptr<HtmlReport> report_;
  CaptionDataset refs_;
  std::unordered_map<std::string, const CaptionRecord*> by_name_;
  std::vector<std::string> hypotheses_;
  std::vector<std::vector<std::string>> references_;
};

// What an earlier run already wrote (--resume) and the photos still to caption, with their ids.
struct Pending {
  std::vector<CaptionRow> previous;
  std::vector<std::filesystem::path> photos;
  std::vector<int64_t> image_ids;
};

Pending pending_photos(const CaptionOptions& o, const OutputPlan& out, const ShardPhotos& part) {
  if (!o.resume || out.file.empty() || !std::filesystem::exists(out.file)) return {{}, part.photos, part.image_ids};
  Pending p;
  p.previous = read_caption_file(out.file, out.format);
  for (size_t i : photos_not_in(p.previous, part.photos, out.format)) {
    p.photos.push_back(part.photos[i]);
    p.image_ids.push_back(part.image_ids[i]);
  }
  std::cerr << "resuming: " << count_of(p.previous.size(), "photo") << " already in " << out.file << ", " << p.photos.size()
            << " to caption\n";
  return p;
}

void print_summary(const OutputPlan& out, size_t captioned, size_t failed, double secs) {
  char rate[64];
  std::snprintf(rate, sizeof rate, " in %.1f s (%.1f photos/s)", secs, captioned / std::max(secs, 1e-9));
  std::cerr << "captioned " << count_of(captioned, "photo") << rate
            << (failed ? ", " + std::to_string(failed) + " unreadable" : "") << (out.file.empty() ? "" : "; wrote " + out.file)
            << "\n";
}

void run_caption(const CaptionOptions& o) {
  set_threads(o.threads);
  const std::vector<std::string> inputs = expand_inputs(o);
  const ShardSpec shard = o.shard.empty() ? shard_from_environment() : parse_shard(o.shard);
  const OutputPlan out = plan_output(o, shard);  // before anything is read: a bad -o name fails at once
  const ImageFileList list = collect_photos(o, inputs);
  if (list.images.empty()) return;
  const bool any_failed = !list.problems.empty();
  ShardPhotos part = take_shard(list.images, shard);
  refuse_outputs_that_are_photos({out.file, o.html}, part.photos);
  refuse_outputs_over_inputs({{"--output", out.file}, {"--html", o.html}},
                             {{"--annotations", o.annotations}, {"--files-from", o.files_from}});
  // Two runs writing one output would each replace the other's rows.
  std::optional<OutputLock> output_lock, html_lock;
  if (!out.file.empty()) output_lock.emplace(out.file);
  if (!o.html.empty()) html_lock.emplace(o.html);
  if (shard.sharded()) write_shard_manifest(out.file, part.manifest);  // unfinished until the end

  const std::filesystem::path model_dir = o.model.empty() ? default_model_dir() : std::filesystem::path(o.model);
  const torch::Device device = resolve_device(o.device);
  ModelBundle model = ModelBundle::load(model_dir, device);
  if (!o.decoder_precision.empty()) model.decoder_precision = o.decoder_precision;
  Encoder encoder = Encoder::load(model.encoder_file, device);
  const CaptionPipelineOptions po = pipeline_options(o, model);

  Pending pending = pending_photos(o, out, part);
  std::unique_ptr<CaptionWriter> writer = out.file.empty()
                                              ? std::make_unique<CaptionWriter>(std::cout, out.format)
                                              : std::make_unique<CaptionWriter>(std::filesystem::path(out.file), out.format);
  for (const auto& r : pending.previous) writer->write(r);
  std::unique_ptr<ReportBuilder> report;
  if (!o.html.empty()) {
    report = std::make_unique<ReportBuilder>(o, model_dir.string(), po.search, pending.previous.size() + pending.photos.size());
    report->add_earlier(pending.previous, po);
  }

  install_stop_handlers();
  // On a terminal that also shows the captions, a progress bar would tangle with them.
  ProgressBar bar("captioning", static_cast<int64_t>(pending.photos.size()),
                  !o.quiet && (!out.file.empty() || !::isatty(STDOUT_FILENO)));
  const auto t0 = std::chrono::steady_clock::now();
  auto last_snapshot = t0;
  size_t captioned = 0;
  CaptionPipeline pipeline(model, encoder, po);
  CaptionCallbacks cb;
  cb.on_caption = [&](const CaptionedImage& c) {
    const std::string tag = c.tag ? c.tag->word : "";
    const double tag_probability = c.tag ? c.tag->probability : 0;
    writer->write({c.file.string(), pending.image_ids.at(c.index), c.caption, c.log_prob, tag, tag_probability});
    ++captioned;
    if (report) report->add(c.file, c.caption, c.log_prob, c.thumbnail_jpeg, tag, tag_probability);
  };
  cb.on_failure = [&](size_t, const ImageError& e) {
    part.manifest.unreadable.push_back(e.file().string());
    bar.finish();
    std::cerr << "skipped " << e.what() << "\n";
  };
  cb.on_progress = [&](size_t done, size_t) {
    bar.update(static_cast<int64_t>(done));
    auto now = std::chrono::steady_clock::now();
    if (!out.file.empty() && now - last_snapshot > std::chrono::seconds(30)) {
      writer->snapshot();  // a crash now loses at most 30 s of work (see --resume)
      last_snapshot = now;
    }
  };
  cb.should_stop = [] { return stop_requested().load(); };
  cb.on_warning = [&](const std::string& w) {
    bar.finish();
    std::cerr << "warning: " << w << "\n";
  };
  const size_t failed = pipeline.run(pending.photos, cb);
  bar.finish();
  writer->finish();
  if (report) report->finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (shard.sharded() && !stop_requested()) {
    part.manifest.finished = true;
    write_shard_manifest(out.file, part.manifest);
  }
  if (stop_requested()) {
    std::cerr << "interrupted: " << count_of(captioned, "caption") << " saved" << (out.file.empty() ? "" : " to " + out.file)
              << "; run again with --resume to continue\n";
    g_exit_code = kExitInterrupted;
    return;
  }
  if (!o.quiet || failed > 0) print_summary(out, captioned, failed, secs);
  if (failed > 0 || any_failed) g_exit_code = kExitSomeInputsFailed;
}
}  // namespace

void add_caption_command(CLI::App& app) {
  auto o = std::make_shared<CaptionOptions>();
  auto* cmd = app.add_subcommand("caption", "Write a caption for every image in the given folders and files");
  cmd->option_defaults()->always_capture_default();
  cmd->add_option("inputs", o->inputs, "Image files and folders; - reads photo paths from standard input, one per line");
  cmd->add_option("--files-from", o->files_from, "Also caption the photos this file lists, one path per line")
      ->check(CLI::ExistingFile);
  cmd->add_option("--model", o->model, "Model directory (default: $CAPTIONER_MODEL, else models/default)");
  cmd->add_option("--output,-o", o->output,
                  "Write captions to this file (atomically) instead of stdout; -: JSON lines on stdout as they are made");
  cmd->add_option("--format", o->format,
                  "json, jsonl, csv, tsv or text (default: from --output's extension, which must name one; text on stdout)")
      ->check(CLI::IsMember({"json", "jsonl", "csv", "tsv", "text"}));
  cmd->add_flag("--recursive,-r", o->recursive, "Also caption images in subfolders");
  cmd->add_option("--html", o->html, "Also write a self-contained HTML page with a thumbnail and the caption of every image");
  cmd->add_option("--annotations", o->annotations,
                  "With --html: show these reference captions and each image's BLEU-4 (matched by file name)")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--resume", o->resume, "Skip images already captioned in --output and add the rest");
  cmd->add_option("--shard", o->shard,
                  "Caption only part K of N (every N-th photo) into <output>.part-K-of-N; "
                  "join the parts with `captioner merge` (default under torchrun: $RANK/$WORLD_SIZE)");
  auto search = "Decoding (defaults: the model's)";
  add_search_overrides(*cmd, o->search, "the model's", search);
  add_decoder_precision_option(*cmd, o->decoder_precision, search);
  // The sampling options mean nothing to a search: given without --sample they are an error, not
  // silently ignored.
  auto* sample = cmd->add_flag("--sample", o->sample, "Sample captions instead of searching for the most likely")->group(search);
  cmd->add_option("--temperature", o->temperature, "Sampling temperature")
      ->check(CLI::Range(0.01, 100.0))
      ->needs(sample)
      ->group(search);
  cmd->add_option("--top-k", o->top_k, "Sample among the k most likely words (0: all)")
      ->check(CLI::NonNegativeNumber)
      ->needs(sample)
      ->group(search);
  // A seed is a count from 0: "-1" would wrap to 2^64 - 1 without a word.
  cmd->add_option("--seed", o->seed, "Sampling seed")->check(CLI::Range(0.0, 1e19))->needs(sample)->group(search);
  auto run = "Running";
  cmd->add_option("--batch", o->batch, "Images decoded together (beams of all of them in one tensor)")
      ->check(CLI::Range(1, 1024))
      ->group(run);
  cmd->add_option("--threads", o->threads,
                  "LibTorch threads for encoder and decoder (0: all cores to encode, 1 to decode: fastest here)")
      ->check(CLI::Range(0, 256))
      ->group(run);
  cmd->add_option("--loader-threads", o->loader_threads, "Image decoding threads")->check(CLI::Range(1, 64))->group(run);
  cmd->add_option("--max-pixels", o->max_pixels, "Refuse larger images before decoding them")
      ->check(CLI::Range(1.0, 1e12))
      ->group(run);
  cmd->add_option("--device", o->device, "cpu, cuda or auto (cuda when available)")->group(run);
  cmd->add_flag("--quiet,-q", o->quiet, "No progress bar or summary")->group(run);
  cmd->callback([o] { run_caption(*o); });
}

}  // namespace captioner::cli
