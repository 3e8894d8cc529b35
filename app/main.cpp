// captioner: write a sentence for every photo in a folder, train the model that does it, and
// score captions as coco-caption does. This file only wires the subcommands together.
#include <c10/util/Exception.h>

#include <exception>
#include <iostream>
#include <new>
#include <string>

#include "app/cli_util.h"
#include "app/commands.h"

int captioner::cli::g_exit_code = captioner::cli::kExitOk;

namespace {
// Errors are one line unless --verbose: a message that runs on (a TorchScript traceback) is cut
// to its first line.
std::string one_line(const std::string& message, bool verbose) {
  const size_t nl = message.find('\n');
  if (verbose || nl == std::string::npos) return message;
  return message.substr(0, nl) + " (--verbose shows more)";
}
}  // namespace

int main(int argc, char** argv) {
  using namespace captioner::cli;
  CLI::App app{"captioner: image captions with a CNN encoder and a recurrent decoder"};
  app.set_version_flag("--version", version_text());
  app.require_subcommand(1);
  app.fallthrough();
  bool verbose = false;
  app.add_flag("--verbose", verbose, "Show errors in full (LibTorch's own messages included)");
  app.footer(exit_codes_help());
  add_caption_command(app);
  add_train_command(app);
  add_eval_command(app);
  add_ensemble_command(app);
  add_serve_command(app);
  add_plot_command(app);
  add_merge_command(app);
  check_every_option(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << usage_error_text(app, argc, argv, e) << "\n";
    return kExitUsage;
  } catch (const UsageError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitUsage;
  } catch (const Interrupted& e) {
    std::cerr << "interrupted: " << e.what() << "\n";
    return kExitInterrupted;
  } catch (const c10::Error& e) {
    // A LibTorch error that no layer turned into a user-level one is a bug or a limit of this
    // build, not bad input; still one line.
    std::cerr << "error: internal error in LibTorch: " << one_line(verbose ? e.what() : e.what_without_backtrace(), verbose)
              << "\n";
    return kExitFatal;
  } catch (const std::bad_alloc&) {
    std::cerr << "error: out of memory (fewer --batch or --loader-threads, or a smaller --max-pixels, need less)\n";
    return kExitFatal;
  } catch (const std::exception& e) {
    std::cerr << "error: " << one_line(e.what(), verbose) << "\n";
    return kExitFatal;
  }
  return g_exit_code;
}
