// The CLI's subcommands. Each file registers one subcommand on the CLI11 app: its options struct
// (defaults in the declaration, shown by --help) and a run function over the library.
#pragma once

#include <CLI/CLI.hpp>

namespace captioner::cli {

// Set by a command to report partial failure (e.g. some images unreadable) without throwing.
extern int g_exit_code;

void add_caption_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_ensemble_command(CLI::App& app);
void add_plot_command(CLI::App& app);
void add_merge_command(CLI::App& app);

}  // namespace captioner::cli
