// captioner: write a sentence for every photo in a folder, train the model that does it, and
// score captions as coco-caption does. This file only wires the subcommands together.
#include <exception>
#include <iostream>

#include "app/commands.h"

int captioner::cli::g_exit_code = 0;

int main(int argc, char** argv) {
  CLI::App app{"captioner: image captions with a CNN encoder and a recurrent decoder"};
  app.set_version_flag("--version", std::string("captioner ") + CAPTIONER_VERSION);
  app.require_subcommand(1);
  app.fallthrough();
  captioner::cli::add_caption_command(app);
  captioner::cli::add_train_command(app);
  captioner::cli::add_eval_command(app);
  captioner::cli::add_ensemble_command(app);
  captioner::cli::add_plot_command(app);
  captioner::cli::add_merge_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return captioner::cli::g_exit_code;
}
