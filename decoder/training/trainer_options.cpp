#include "decoder/training/trainer_options.h"

namespace captioner {

nlohmann::json to_json(const TrainerOptions& o) {
  return {{"epochs", o.epochs},
          {"batch_size", o.batch_size},
          {"learning_rate", o.learning_rate},
          {"lr_decay", o.lr_decay},
          {"lr_decay_every", o.lr_decay_every},
          {"weight_decay", o.weight_decay},
          {"grad_clip", o.grad_clip},
          {"label_smoothing", o.label_smoothing},
          {"ema_decay", o.ema_decay},
          {"patience", o.patience},
          {"flip_augment", o.flip_augment},
          {"bf16_products", o.bf16_products},
          {"seed", o.seed}};
}

}  // namespace captioner
