// Small pieces every command shares: a progress bar that stays quiet when stderr is not a
// terminal, thread settings, and a stop flag set by SIGINT/SIGTERM.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace captioner::cli {

// One line on stderr: "label [=====>    ] 45% 1234/5000 12.3/s ETA 0:42 extra".
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, bool enabled);
  ~ProgressBar();
  void update(int64_t done, const std::string& extra = "");
  void finish();  // clears the line
  static bool stderr_is_terminal();

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

}  // namespace captioner::cli
