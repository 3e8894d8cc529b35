#include "app/cli_util.h"

#include "app/commands.h"

#include <torch/torch.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <ctime>

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
}

const std::atomic<bool>& stop_requested() { return g_stop; }

void set_threads(int threads) {
  int n = threads > 0 ? threads : usable_cores();
  at::set_num_threads(n);
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

void ProgressBar::update(int64_t done, const std::string& extra) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double rate = elapsed > 0 ? done / elapsed : 0;
  double eta = rate > 0 ? (total_ - done) / rate : -1;
  const int width = 24;
  int filled = total_ > 0 ? static_cast<int>(width * done / total_) : 0;
  std::string bar(static_cast<size_t>(filled), '=');
  if (filled < width) bar += '>';
  bar.resize(width, ' ');
  std::fprintf(stderr, "\r\033[K%s [%s] %3d%% %lld/%lld %.1f/s ETA %s %s", label_.c_str(), bar.c_str(),
               total_ > 0 ? static_cast<int>(100 * done / total_) : 0, static_cast<long long>(done),
               static_cast<long long>(total_), rate, format_duration(eta).c_str(), extra.c_str());
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
      ->group(group);
  cmd.add_option("--block-ngram", search.block_ngram_repeat, "Never repeat an n-gram of this size (0: off)")
      ->default_str(defaults_from)
      ->group(group);
  cmd.add_option("--max-word-repeats", search.max_word_repeats,
                 "Use no word (function words aside) more than this many times in a caption (0: off)")
      ->default_str(defaults_from)
      ->check(CLI::Range(0, 10))
      ->group(group);
  cmd.add_option("--tags", search.tag_threshold,
                 "Tag-guided captions: when the encoder's ImageNet classifier is at least this sure of a concept "
                 "(\"bird\" for an eagle), the caption must name it (0: off)")
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
