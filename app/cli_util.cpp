#include "app/cli_util.h"

#include "app/commands.h"

#include <sys/ioctl.h>
#include <torch/torch.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <sstream>

#include "captioner_build_info.h"  // CAPTIONER_GIT_REVISION, written by app/build_info.cmake at build time

#include "decoder/bundle/model_bundle.h"
#include "encoder/threading.h"

namespace captioner::cli {

namespace {
std::atomic<bool> g_stop{false};
std::atomic<int64_t> g_first_signal_ns{0};
static_assert(std::atomic<int64_t>::is_always_lock_free, "used in a signal handler");

int64_t monotonic_ns() {  // clock_gettime is async-signal-safe
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

void on_signal(int sig) {
  const int64_t now = monotonic_ns();
  if (g_stop.exchange(true)) {
    // `timeout` (and supervisors that signal a process and then its group) deliver one request as
    // two SIGTERMs a moment apart; only a second request, later than that, aborts.
    if (now - g_first_signal_ns.load() < 500'000'000) return;
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
  g_first_signal_ns.store(now);
  const char msg[] = "\nstopping after the current batch (press Ctrl-C again to abort now)\n";
  ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)ignored;
}
}  // namespace

void install_stop_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  // A closed terminal or ssh session stops a run as Ctrl-C does (what was made is saved), unless
  // it was started under nohup, which ignores SIGHUP.
  if (std::signal(SIGHUP, SIG_IGN) != SIG_IGN) std::signal(SIGHUP, on_signal);
}

void check_every_option(CLI::App& app) {
  const CLI::Validator finite(
      [](std::string& text) {
        try {
          return std::isfinite(std::stod(text)) ? std::string() : "not a finite number: " + text;
        } catch (const std::exception&) {
          return std::string();  // not a number at all: CLI11's own conversion says so
        }
      },
      "", "FINITE");
  const CLI::Validator named([](std::string& text) { return text.empty() ? std::string("an empty file name") : std::string(); },
                             "", "NAMED");
  for (CLI::App* command : app.get_subcommands([](CLI::App*) { return true; })) {
    for (CLI::Option* option : command->get_options()) {
      if (option->get_type_name().find("FLOAT") != std::string::npos) option->check(finite);
      const std::string name = option->get_name();
      if (name == "--output" || name == "--html" || name == "--output-dir") option->check(named);
    }
  }
}

namespace {
bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (std::filesystem::exists(a, ec) && std::filesystem::exists(b, ec)) return std::filesystem::equivalent(a, b, ec);
  return std::filesystem::weakly_canonical(a, ec) == std::filesystem::weakly_canonical(b, ec);
}
}  // namespace

void refuse_outputs_over_inputs(const NamedPaths& outputs, const NamedPaths& inputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    const auto& [what, path] = outputs[i];
    if (path.empty() || path == "-") continue;
    for (const auto& [input_what, input] : inputs) {
      if (!input.empty() && input != "-" && same_file(path, input)) {
        throw UsageError(what + " " + path + " is also " + input_what + ": it would be replaced; write to another file");
      }
    }
    for (size_t j = i + 1; j < outputs.size(); ++j) {
      if (!outputs[j].second.empty() && same_file(path, outputs[j].second)) {
        throw UsageError(what + " and " + outputs[j].first + " name the same file, " + path + "; give each its own");
      }
    }
  }
}

const std::atomic<bool>& stop_requested() { return g_stop; }

void set_threads(int threads) {
  int n = threads > 0 ? threads : usable_cores();
  at::set_num_threads(n);
}

std::string exit_codes_help() {
  return "Exit codes: 0 everything done; 1 some inputs failed (each named, the rest done); 2 wrong command line; "
         "3 stopped by an error; 130 interrupted (Ctrl-C or SIGTERM).";
}

std::string version_text() {
  std::string text = std::string("captioner ") + CAPTIONER_VERSION + " (git " + CAPTIONER_GIT_REVISION + ")\n";
  text += std::string("LibTorch ") + TORCH_VERSION + "\n";
  // Captions depend on these: int8 products sum differently with and without VNNI, and bf16
  // training products are native only with AVX512-BF16.
  auto yes_no = [](bool b) { return b ? "yes" : "no"; };
  text += std::string("CPU: AVX2 ") + yes_no(__builtin_cpu_supports("avx2")) + ", AVX-512 " +
          yes_no(__builtin_cpu_supports("avx512f")) + ", AVX512-VNNI " + yes_no(__builtin_cpu_supports("avx512vnni")) +
          ", AVX512-BF16 " + yes_no(__builtin_cpu_supports("avx512bf16"));
  return text;
}

namespace {
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::vector<const CLI::App*> subcommands_of(const CLI::App& app) {
  return app.get_subcommands([](const CLI::App*) { return true; });
}

// The long names of a command's options as typed ("--beam"), hidden old spellings left out.
std::vector<std::string> option_names(const CLI::App& cmd) {
  std::vector<std::string> names;
  for (const CLI::Option* opt : cmd.get_options()) {
    if (opt->get_group().empty()) continue;
    for (const auto& name : opt->get_lnames()) names.push_back("--" + name);
  }
  return names;
}

bool knows_option(const CLI::App& cmd, const std::string& token) {
  const std::string name = token.substr(0, token.find('='));
  for (const CLI::Option* opt : cmd.get_options()) {
    if (opt->check_name(name)) return true;
  }
  return false;
}
}  // namespace

std::string nearest_name(const std::string& word, const std::vector<std::string>& names) {
  std::string best;
  size_t best_distance = 3;  // at most 2 edits away
  for (const auto& name : names) {
    size_t d = edit_distance(word, name);
    if (d > 0 && d < best_distance) {
      best = name;
      best_distance = d;
    }
  }
  if (best.empty() && word.size() >= 4) {  // "--beam-w" for "--beam-width": a prefix of one name only
    for (const auto& name : names) {
      if (name.rfind(word, 0) == 0) {
        if (!best.empty()) return "";
        best = name;
      }
    }
  }
  return best;
}

std::string usage_error_text(const CLI::App& app, int argc, const char* const* argv, const CLI::ParseError& error) {
  const std::string program = "captioner";
  const CLI::App* command = nullptr;
  std::string first_word;  // the first argument that is not an option
  for (int i = 1; i < argc && !command; ++i) {
    const std::string arg = argv[i];
    if (!arg.empty() && arg[0] == '-') continue;
    for (const CLI::App* sub : subcommands_of(app)) {
      if (sub->check_name(arg)) command = sub;
    }
    if (!command && first_word.empty()) first_word = arg;
  }
  std::vector<std::string> command_names;
  for (const CLI::App* sub : subcommands_of(app)) command_names.push_back(sub->get_name());
  std::string commands;
  for (const auto& name : command_names) commands += (commands.empty() ? "" : ", ") + name;

  if (!command) {
    if (first_word.empty()) {
      return "error: no command given\nusage: " + program + " <command> [options]; commands: " + commands + "\n" + program +
             " <command> --help shows a command's options";
    }
    const std::string near = nearest_name(first_word, command_names);
    return "error: unknown command '" + first_word + "'" + (near.empty() ? "" : "; did you mean '" + near + "'?") +
           "\ncommands: " + commands + " (" + program + " <command> --help shows a command's options)";
  }
  const std::string help_hint = "(" + program + " " + command->get_name() + " --help lists its options)";
  // An option the command does not know: name it and the nearest known one.
  bool after_command = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (!after_command) {
      after_command = command->check_name(arg);
      continue;
    }
    if (arg.size() < 2 || arg[0] != '-' || knows_option(*command, arg) || knows_option(app, arg)) continue;
    const std::string name = arg.substr(0, arg.find('='));
    const std::string near = nearest_name(name, option_names(*command));
    return "error: " + program + " " + command->get_name() + " has no option " + name +
           (near.empty() ? "" : "; did you mean " + near + "?") + " " + help_hint;
  }
  return "error: " + std::string(error.what()) + " " + help_hint;
}

CaptionFormat usage_format_for(const std::string& file) {
  try {
    return caption_format_for(file);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
}

std::string count_of(size_t n, const std::string& singular, const std::string& plural) {
  return std::to_string(n) + " " + (n == 1 ? singular : plural.empty() ? singular + "s" : plural);
}

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "--:--";
  long t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
  }
  return buf;
}

bool ProgressBar::stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

ProgressBar::ProgressBar(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled && stderr_is_terminal()) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() { finish(); }

namespace {
int terminal_columns() {
  winsize ws{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  const char* columns = std::getenv("COLUMNS");
  const int n = columns ? std::atoi(columns) : 0;
  return n > 0 ? n : 80;
}
}  // namespace

std::string ProgressBar::line(int64_t done, const std::string& extra, double elapsed, int columns) const {
  const double rate = elapsed > 0 ? done / elapsed : 0;
  const double eta = rate > 0 ? (total_ - done) / rate : -1;
  char numbers[160];
  std::snprintf(numbers, sizeof numbers, " %3d%% %lld/%lld %.1f/s ETA %s", total_ > 0 ? static_cast<int>(100 * done / total_) : 0,
                static_cast<long long>(done), static_cast<long long>(total_), rate, format_duration(eta).c_str());
  std::string tail = numbers;
  if (!extra.empty()) tail += " " + extra;
  // The cursor must stay on the line: one column is left free, or the terminal wraps.
  const int room = columns - 1;
  const int bar_width = std::clamp(room - static_cast<int>(label_.size() + 3 + tail.size()), 0, 24);
  std::string text = label_;
  if (bar_width >= 6) {
    const int filled = total_ > 0 ? static_cast<int>(bar_width * std::min(done, total_) / total_) : 0;
    std::string bar(static_cast<size_t>(filled), '=');
    if (filled < bar_width) bar += '>';
    bar.resize(static_cast<size_t>(bar_width), ' ');
    text += " [" + bar + "]";
  }
  text += tail;
  if (room > 0 && text.size() > static_cast<size_t>(room)) {
    size_t cut = static_cast<size_t>(room);
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 character
    text.resize(cut);
  }
  return text;
}

void ProgressBar::update(int64_t done, const std::string& extra) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  std::fprintf(stderr, "\r\033[K%s", line(done, extra, elapsed, terminal_columns()).c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (drawn_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
    drawn_ = false;
  }
}

void add_search_overrides(CLI::App& cmd, SearchOverrides& search, const std::string& defaults_from, const std::string& group) {
  cmd.add_option("--beam", search.beam_size, "Beam width (1: greedy)")
      ->default_str(defaults_from)
      ->check(CLI::Range(1, 64))
      ->group(group);
  cmd.add_option("--max-len", search.max_length, "Maximum words per caption")
      ->default_str(defaults_from)
      ->check(CLI::Range(1, 200))
      ->group(group);
  cmd.add_option("--length-penalty", search.length_penalty, "Rank beams by log-prob / (words+1)^alpha")
      ->default_str(defaults_from)
      ->check(CLI::Range(0.0, 5.0))
      ->group(group);
  cmd.add_option("--block-ngram", search.block_ngram_repeat, "Never repeat an n-gram of this size (0: off)")
      ->default_str(defaults_from)
      ->check(CLI::Range(0, 10))
      ->group(group);
  cmd.add_option("--max-word-repeats", search.max_word_repeats,
                 "Use no word (function words aside) more than this many times in a caption (0: off)")
      ->default_str(defaults_from)
      ->check(CLI::Range(0, 10))
      ->group(group);
  cmd.add_option("--tag-confidence", search.tag_threshold,
                 "Tag-guided captions: when the encoder's ImageNet classifier gives a concept (\"bird\" for an "
                 "eagle) at least this probability, the caption must name it (0: off)")
      ->default_str(defaults_from)
      ->check(CLI::Range(0.0, 1.0))
      ->group(group);
  add_old_spelling(cmd, "--tags", "--tag-confidence", search.tag_threshold);
  cmd.add_option("--subject-confidence", search.subject_threshold,
                 "Animal subjects: when the classifier is at least this sure of an animal the caption does not name "
                 "(\"bird\" for an eagle), caption the photo again about it (0: off)")
      ->default_str(defaults_from)
      ->check(CLI::Range(0.0, 1.0))
      ->group(group);
  cmd.add_option("--mi-weight", search.mi_weight,
                 "Mutual-information decoding: rank words by log p(w|photo) - L log p(w|mean photo), "
                 "for captions that say what sets a photo apart (0: off; doubles decoding work)")
      ->default_str(defaults_from)
      ->check(CLI::Range(0.0, 0.99))
      ->group(group);
}

void add_decoder_precision_option(CLI::App& cmd, std::string& precision, const std::string& group) {
  cmd.add_option("--decoder-precision", precision,
                 "Decoder arithmetic on the CPU: int8 (~3x faster products on CPUs with VNNI) or float32")
      ->default_str("the model's")
      ->check(CLI::IsMember(ModelBundle::decoder_precisions()))
      ->group(group);
}

}  // namespace captioner::cli
