// The CLI's subcommands. Each file registers one subcommand on the CLI11 app: its options struct
// (defaults in the declaration, shown by --help) and a run function over the library.
#pragma once

#include <CLI/CLI.hpp>
#include <stdexcept>
#include <string>

#include "decoder/search/search_options.h"

namespace captioner::cli {

// A command line that cannot work (two options that exclude each other, an output name that says
// no format): main prints "error: <what>" and exits kExitUsage, as for CLI11's own refusals.
struct UsageError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Set by a command to report partial failure (e.g. some images unreadable) without throwing.
extern int g_exit_code;

// Thrown by a command that stops on SIGINT/SIGTERM with nothing worth keeping (eval's scores
// are all or nothing): main prints "interrupted: <what>" and exits 130, as a shell does.
struct Interrupted : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The decoding options of every command that decodes or stores decoding defaults: --beam,
// --max-len, --length-penalty, --block-ngram, --max-word-repeats. Each one left out keeps the value
// of `defaults_from` ("the model's"), as SearchOverrides::applied_to does.
void add_search_overrides(CLI::App& cmd, SearchOverrides& search, const std::string& defaults_from,
                          const std::string& group = "Options");

// --decoder-precision float32|int8: overrides the model's (ModelBundle::decoder_precision) when set.
void add_decoder_precision_option(CLI::App& cmd, std::string& precision, const std::string& group = "Options");

void add_caption_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_ensemble_command(CLI::App& app);
void add_plot_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_merge_command(CLI::App& app);

}  // namespace captioner::cli
