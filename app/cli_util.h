// Small pieces every command shares: a progress bar that stays quiet when stderr is not a
// terminal, thread settings, and a stop flag set by SIGINT/SIGTERM.
#pragma once

#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "datasets/caption_writer.h"

namespace captioner::cli {

// Exit codes, the same in every command (`captioner --help` lists them).
inline constexpr int kExitOk = 0;                // everything asked for was done
inline constexpr int kExitSomeInputsFailed = 1;  // the rest was done; each failed input is named on stderr
inline constexpr int kExitUsage = 2;             // the command line is wrong; nothing was done
inline constexpr int kExitFatal = 3;             // stopped by the error on stderr (a missing model, an unwritable output)
inline constexpr int kExitInterrupted = 130;     // Ctrl-C or SIGTERM; what was finished is saved
std::string exit_codes_help();

// "captioner 0.2.0 (git 1a2b3c4)" and the build facts captions depend on: LibTorch's version and
// the CPU features that change int8 sums and bf16 products.
std::string version_text();

// One line (two with a hint) for a command line CLI11 refused: the unknown word with the nearest
// known one ("did you mean --beam?"), or the usage when no command was given.
std::string usage_error_text(const CLI::App& app, int argc, const char* const* argv, const CLI::ParseError& error);

// The known name nearest to `word` (edit distance at most 2, or a prefix); empty when none is near.
std::string nearest_name(const std::string& word, const std::vector<std::string>& names);

// An option's name as a recorded command line should spell it: the new spelling for an old one.
inline std::string canonical_name(const CLI::Option& opt) {
  return opt.get_group().empty() ? opt.get_description() : opt.get_name();
}

// An option's old spelling, still accepted for scripts that use it: hidden from --help, and each
// use prints one line naming the new spelling.
template <typename T>
void add_old_spelling(CLI::App& cmd, const std::string& old_name, const std::string& new_name, T& target) {
  // Hidden options have no name for CLI11 (get_name() is empty): the description keeps the new
  // spelling, which is what a recorded command line should say (see canonical_name).
  cmd.add_option(old_name, target, new_name)->group("")->each([old_name, new_name](const std::string&) {
    std::cerr << "warning: " << old_name << " is now " << new_name << " (the old spelling will be removed)\n";
  });
}

// One line on stderr: "label [=====>    ] 45% 1234/5000 12.3/s ETA 0:42 extra", never wider than
// the terminal (the bar shrinks, then the end is cut), so a redraw never wraps.
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, bool enabled);
  ~ProgressBar();
  void update(int64_t done, const std::string& extra = "");
  void finish();  // clears the line
  static bool stderr_is_terminal();
  // The line for `columns` terminal columns (what update() draws).
  std::string line(int64_t done, const std::string& extra, double elapsed_s, int columns) const;

 private:
  std::string label_;
  int64_t total_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// Sets LibTorch's intra-op threads (0: all cores); LibTorch starts with one here.
void set_threads(int threads);

// After install_stop_handlers(), the first SIGINT/SIGTERM sets stop_requested(); a second one,
// more than half a second later, terminates at once (`timeout` sends one request twice).
void install_stop_handlers();
const std::atomic<bool>& stop_requested();

std::string format_duration(double seconds);

// The caption format an output file's name asks for; a name that asks for none is a UsageError.
CaptionFormat usage_format_for(const std::string& file);

// Rules every command's options share, added once all commands are built: a number option must be
// finite (CLI11's ranges let NaN through: every comparison with it is false) and an output name
// may not be empty (`-o ''` would write to standard output without a word).
void check_every_option(CLI::App& app);

// Refuses (a UsageError, exit 2) an output that is the same file as an input or as another output:
// it would be replaced by what is made from it. Pairs are (what names it, path); missing or empty
// paths are skipped.
using NamedPaths = std::vector<std::pair<std::string, std::string>>;
void refuse_outputs_over_inputs(const NamedPaths& outputs, const NamedPaths& inputs);

// "1 image", "2 images".
std::string count_of(size_t n, const std::string& singular, const std::string& plural = "");

}  // namespace captioner::cli
