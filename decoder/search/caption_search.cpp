#include "decoder/search/caption_search.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <unordered_map>

#include "decoder/search/beam_candidates.h"
#include "vocab/vocabulary.h"

namespace captioner {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

double ranked(double log_prob, size_t words, double alpha) {
  return alpha == 0 ? log_prob : log_prob / std::pow(static_cast<double>(words + 1), alpha);
}

void check_inputs(const FeatureViews& views, const SearchOptions& o) {
  if (views.empty() || !views[0].defined() || views[0].dim() != 2) {
    throw std::invalid_argument("caption search needs image features of shape (B, D)");
  }
  if (o.beam_size < 1) throw std::invalid_argument("beam size must be >= 1");
  if (o.max_length < 1) throw std::invalid_argument("max length must be >= 1");
  if (o.block_ngram_repeat < 0) throw std::invalid_argument("block_ngram_repeat must be >= 0");
  if (o.max_word_repeats < 0) throw std::invalid_argument("max_word_repeats must be >= 0");
  // Below ~1e-3 the division overflows float32 to inf and sampling breaks: 0.01 already samples
  // the most likely word almost always.
  if (o.sample && !(o.temperature >= 0.01 && o.temperature <= 100)) {
    throw std::invalid_argument("temperature must be between 0.01 and 100");
  }
}

// What the search options forbid at each step: <pad>, <start>, <unk> if suppressed, <end>
// before min_length, and the repetition rules applied to each row's history.
class BanRules {
 public:
  BanRules(const SearchOptions& o, int64_t vocab) : o_(o) {
    if (o.max_word_repeats > 0) {
      exempt_.assign(static_cast<size_t>(vocab), false);
      for (int64_t id : o.repeat_exempt) {
        if (id >= 0 && id < vocab) exempt_[static_cast<size_t>(id)] = true;
      }
    }
  }

  // Each row's banned words at step t < max_length, sorted ascending.
  std::vector<std::vector<int64_t>> words(const std::vector<std::vector<int64_t>>& history, int t) const {
    std::vector<int64_t> always = {Vocabulary::kPad, Vocabulary::kStart};
    if (o_.suppress_unk) always.push_back(Vocabulary::kUnk);
    if (t < o_.min_length) always.push_back(Vocabulary::kEnd);
    std::vector<std::vector<int64_t>> out(history.size(), always);
    const size_t n = static_cast<size_t>(o_.block_ngram_repeat);
    std::unordered_map<int64_t, int> uses;
    for (size_t r = 0; r < history.size(); ++r) {
      const auto& h = history[r];
      auto& ban = out[r];
      if (!h.empty()) {
        if (o_.max_word_repeats > 0) {  // a word used max_word_repeats times already is used up
          uses.clear();
          for (int64_t w : h) {
            if (!exempt_[static_cast<size_t>(w)] && ++uses[w] == o_.max_word_repeats) ban.push_back(w);
          }
        }
        if (o_.block_consecutive_repeat) ban.push_back(h.back());
        // Ban w if (last n-1 words, w) already occurred: find earlier matches of the last n-1 words.
        if (n >= 1 && h.size() >= n) {
          const size_t k = n - 1;
          for (size_t i = 0; i + k < h.size(); ++i) {
            if (std::equal(h.end() - k, h.end(), h.begin() + i)) ban.push_back(h[i + k]);
          }
        }
      }
      std::sort(ban.begin(), ban.end());
    }
    return out;
  }

  // Log-probabilities with every banned word set to -inf (at t >= max_length all but <end>).
  // Other entries keep their value, so the best surviving candidates carry their true log-probs.
  torch::Tensor mask(const torch::Tensor& logp, const std::vector<std::vector<int64_t>>& history, int t) const {
    auto masked = logp.clone();
    const float ninf = -std::numeric_limits<float>::infinity();
    if (t >= o_.max_length) {  // out of words: only <end> remains
      auto end_col = masked.select(1, Vocabulary::kEnd).clone();
      masked.fill_(ninf);
      masked.select(1, Vocabulary::kEnd).copy_(end_col.clamp_min(-1e30));
      return masked;
    }
    std::vector<int64_t> rows, cols;
    const auto banned = words(history, t);
    for (size_t r = 0; r < banned.size(); ++r) {
      for (int64_t w : banned[r]) {
        rows.push_back(static_cast<int64_t>(r));
        cols.push_back(w);
      }
    }
    if (!rows.empty()) masked.index_put_({torch::tensor(rows), torch::tensor(cols)}, ninf);
    return masked;
  }

 private:
  const SearchOptions& o_;
  std::vector<bool> exempt_;  // words max_word_repeats leaves alone (e.g. "a")
};

torch::Tensor as_index(const std::vector<int64_t>& v) { return torch::tensor(v, torch::kLong); }

// The model's own log-probabilities of the step whose ranking scores are `ranking`: that very
// tensor, unless the scorer ranks by something else; then its model's, each row repeated `repeat`
// times as the search repeated the ranking's at step 0.
torch::Tensor model_step(SequenceScorer& scorer, const torch::Tensor& ranking, int64_t repeat) {
  auto m = scorer.last_model_log_probs();
  if (!m.defined()) return ranking;
  m = m.to(torch::kFloat).contiguous();
  return repeat > 1 ? m.repeat_interleave(repeat, 0) : m;
}

// The next step's beams, image by image: a live beam extends its row's history by its token; a
// padding beam (log-prob -inf, so never chosen) keeps every image's block of rows the same size.
struct NextBeams {
  std::vector<int64_t> rows, tokens;
  std::vector<double> logp, model_logp;  // what the search ranks by; the model's own log-prob
  std::vector<std::vector<int64_t>> history;

  void add(const std::vector<std::vector<int64_t>>& previous, int64_t row, int64_t token, double log_prob,
           double model_log_prob) {
    rows.push_back(row);
    tokens.push_back(token);
    logp.push_back(log_prob);
    model_logp.push_back(model_log_prob);
    history.push_back(previous[row]);
    history.back().push_back(token);
  }
  void pad(const std::vector<std::vector<int64_t>>& previous, int64_t row) {
    rows.push_back(row);
    tokens.push_back(Vocabulary::kEnd);
    logp.push_back(kNegInf);
    model_logp.push_back(kNegInf);
    history.push_back(previous[row]);
  }
  // Moves the scorer and the search's state onto these beams. At step 0 the scorer still holds
  // one row per image, whose beams are the first `rows_per_image` rows.
  void advance(SequenceScorer& scorer, int t, int64_t rows_per_image, std::vector<std::vector<int64_t>>& history_out,
               std::vector<double>& logp_out, std::vector<double>& model_logp_out, torch::Tensor& tokens_out) {
    if (t == 0) {
      for (auto& r : rows) r /= rows_per_image;
    }
    scorer.select(as_index(rows));
    history_out = std::move(history);
    logp_out = std::move(logp);
    model_logp_out = std::move(model_logp);
    tokens_out = as_index(tokens);
  }
};

// (B, V) true where a word of each image's list is; ids outside the vocabulary are an error,
// special tokens are left out (no caption can be made to contain <end>).
torch::Tensor word_mask(const std::vector<const std::vector<int64_t>*>& words, int64_t V) {
  std::vector<int64_t> image, word;
  for (size_t i = 0; i < words.size(); ++i) {
    for (int64_t w : *words[i]) {
      if (w < 0 || w >= V) throw std::invalid_argument("guide word id " + std::to_string(w) + " outside the vocabulary");
      if (w < Vocabulary::kNumSpecial) continue;
      image.push_back(static_cast<int64_t>(i));
      word.push_back(w);
    }
  }
  auto mask = torch::zeros({static_cast<int64_t>(words.size()), V}, torch::kBool);
  if (!image.empty()) mask.index_put_({as_index(image), as_index(word)}, true);
  return mask;
}

}  // namespace

namespace {
// One word per photo per step until each says <END>: greedy search and sampling differ only in
// how `choose` picks the next word from the step's (masked) log-probabilities.
std::vector<Caption> word_by_word(SequenceScorer& scorer, const FeatureViews& views, const SearchOptions& o,
                                  const std::function<torch::Tensor(const torch::Tensor&)>& choose) {
  check_inputs(views, o);
  torch::NoGradGuard no_grad;
  const int64_t B = views[0].size(0);
  std::vector<Caption> out(B);
  scorer.start(views);
  std::vector<int64_t> active(B);
  for (int64_t i = 0; i < B; ++i) active[i] = i;
  std::vector<std::vector<int64_t>> history(B);
  std::vector<double> ranking_sum(B, 0.0);  // what the choices were made by (the model's log-prob unless MI)
  auto tokens = torch::full({B}, Vocabulary::kStart, torch::kLong);
  const BanRules rules(o, scorer.vocab_size());
  for (int t = 0; t <= o.max_length && !active.empty(); ++t) {
    auto logp = scorer.step(tokens).to(torch::kFloat);
    const auto model = model_step(scorer, logp, 1);
    auto next = choose(rules.mask(logp, history, t));
    auto chosen = logp.gather(1, next.unsqueeze(1)).squeeze(1).to(torch::kDouble);
    auto chosen_model = model.gather(1, next.unsqueeze(1)).squeeze(1).to(torch::kDouble);
    auto next_a = next.accessor<int64_t, 1>();
    auto chosen_a = chosen.accessor<double, 1>();
    auto chosen_model_a = chosen_model.accessor<double, 1>();
    std::vector<int64_t> keep, keep_tokens, still_active;
    std::vector<std::vector<int64_t>> kept_history;
    for (size_t r = 0; r < active.size(); ++r) {
      Caption& c = out[active[r]];
      c.log_prob += chosen_model_a[r];
      ranking_sum[active[r]] += chosen_a[r];
      if (next_a[r] == Vocabulary::kEnd) {
        c.tokens = std::move(history[r]);
        c.score = ranked(ranking_sum[active[r]], c.tokens.size(), o.length_penalty);
      } else {
        history[r].push_back(next_a[r]);
        keep.push_back(static_cast<int64_t>(r));
        keep_tokens.push_back(next_a[r]);
        still_active.push_back(active[r]);
        kept_history.push_back(std::move(history[r]));
      }
    }
    if (keep.size() != active.size() && !keep.empty()) scorer.select(as_index(keep));
    active = std::move(still_active);
    history = std::move(kept_history);
    tokens = as_index(keep_tokens);
  }
  return out;
}
}  // namespace

std::vector<Caption> greedy_search(SequenceScorer& scorer, const FeatureViews& views, const SearchOptions& o) {
  return word_by_word(scorer, views, o, [](const torch::Tensor& masked) { return masked.argmax(1); });
}

std::vector<Caption> beam_search(SequenceScorer& scorer, const FeatureViews& views, const SearchOptions& o) {
  check_inputs(views, o);
  torch::NoGradGuard no_grad;
  const int64_t B = views[0].size(0);
  const int64_t K = o.beam_size;
  const int64_t V = scorer.vocab_size();
  scorer.start(views);  // B rows; from step 1 on, row a*K + k holds beam k of active image a

  std::vector<int64_t> active(B);  // image of each active slot
  for (int64_t i = 0; i < B; ++i) active[i] = i;
  std::vector<std::vector<Caption>> finished(B);
  std::vector<std::vector<int64_t>> history(B * K);
  std::vector<double> beam_logp(B * K, kNegInf);         // ranking score of each row's prefix
  for (int64_t a = 0; a < B; ++a) beam_logp[a * K] = 0;  // one live beam per image at the start
  std::vector<double> beam_model = beam_logp;            // the model's log-prob of it
  auto tokens = torch::full({B * K}, Vocabulary::kStart, torch::kLong);
  // The greedy caption rides along as one of the K beams (the row holding it, -1 once it has
  // ended), so the result is never below greedy's by the search's own score without a second
  // decoding pass. It displaces the K-th candidate only when it has fallen out of the top K.
  std::vector<int64_t> greedy_row(B);
  for (int64_t a = 0; a < B; ++a) greedy_row[a] = a * K;
  const BanRules rules(o, V);

  for (int t = 0; t <= o.max_length && !active.empty(); ++t) {
    const int64_t A = static_cast<int64_t>(active.size());
    // Step 0 runs one row per image: all of an image's beams start from the same <start>, so
    // the K copies only come into being as the rows the first re-ranking selects.
    auto logp = scorer.step(t == 0 ? tokens.narrow(0, 0, B) : tokens).to(torch::kFloat);
    if (t == 0) logp = logp.repeat_interleave(K, 0);
    const auto model = model_step(scorer, logp, t == 0 ? K : 1);
    // Without a length penalty a caption's score only falls as it grows, unless the search ranks
    // by something other than log-probabilities (MI can add to it).
    const bool monotone = o.length_penalty == 0 && model.is_same(logp);
    // The rules' bans are skipped while ranking rather than written into a masked copy; the last
    // step (only <end> left) is rare enough to mask.
    const bool last = t >= o.max_length;
    const auto scores = (last ? rules.mask(logp, history, t) : logp).contiguous();
    const auto banned = last ? std::vector<std::vector<int64_t>>(history.size()) : rules.words(history, t);
    const int64_t take = std::min<int64_t>(2 * K, K * V);
    const auto candidates = best_beam_candidates(scores.data_ptr<float>(), A, K, V, beam_logp, banned, take);
    // The float sums above only rank; the exact log-probability is accumulated in double.
    auto logp_d = logp.accessor<float, 2>();
    auto model_d = model.accessor<float, 2>();
    auto greedy_word = [&](int64_t row) { return best_allowed_word(scores.data_ptr<float>() + row * V, V, banned[row]); };

    std::vector<int64_t> next_active, next_greedy_row;
    NextBeams next;
    for (int64_t a = 0; a < A; ++a) {
      const int64_t img = active[a];
      std::vector<std::pair<int64_t, int64_t>> live;  // (row, token)
      std::vector<double> live_logp, live_model;
      const auto& cand = candidates[a];
      for (size_t j = 0; j < cand.size(); ++j) {
        const int64_t beam = cand[j].index / V, tok = cand[j].index % V;
        const int64_t row = a * K + beam;
        const double lp = beam_logp[row] + logp_d[row][tok];
        const double mlp = beam_model[row] + model_d[row][tok];
        if (tok == Vocabulary::kEnd) {
          // Only an <end> that ranks among the top K candidates finishes a caption, as in the
          // usual formulation; with K = 1 this makes beam search exactly greedy.
          if (static_cast<int64_t>(j) < K)
            finished[img].push_back({history[row], mlp, ranked(lp, history[row].size(), o.length_penalty)});
        } else if (static_cast<int64_t>(live.size()) < K) {
          live.emplace_back(row, tok);
          live_logp.push_back(lp);
          live_model.push_back(mlp);
        }
        if (static_cast<int64_t>(live.size()) == K && static_cast<int64_t>(finished[img].size()) >= K) break;
      }
      int64_t greedy_k = -1;  // position of the greedy continuation among `live`
      if (const int64_t g = greedy_row[a]; g >= 0) {
        const int64_t tok = greedy_word(g);
        const double lp = beam_logp[g] + logp_d[g][tok];
        const double mlp = beam_model[g] + model_d[g][tok];
        if (tok == Vocabulary::kEnd) {
          finished[img].push_back({history[g], mlp, ranked(lp, history[g].size(), o.length_penalty)});
        } else {
          auto it = std::find(live.begin(), live.end(), std::make_pair(g, tok));
          if (it == live.end()) {
            if (static_cast<int64_t>(live.size()) < K) {
              live.emplace_back(g, tok);
              live_logp.push_back(lp);
              live_model.push_back(mlp);
            } else {
              live.back() = {g, tok};
              live_logp.back() = lp;
              live_model.back() = mlp;
            }
            it = live.end() - 1;
          }
          greedy_k = it - live.begin();
        }
      }
      bool done = live.empty() || static_cast<int64_t>(finished[img].size()) >= K;
      double best_done = kNegInf;
      for (const auto& c : finished[img]) best_done = std::max(best_done, c.score);
      if (!done && monotone && !finished[img].empty()) {
        // Without a length penalty scores only fall as captions grow: a finished caption that
        // beats every live beam cannot be overtaken.
        done = best_done >= *std::max_element(live_logp.begin(), live_logp.end());
      }
      // Stopping while the greedy caption is unfinished is only safe when nothing it can still
      // become could beat what is finished.
      if (done && greedy_k >= 0 && !(monotone && best_done >= live_logp[greedy_k])) done = false;
      if (done) continue;
      next_greedy_row.push_back(greedy_k >= 0 ? static_cast<int64_t>(next_active.size()) * K + greedy_k : -1);
      next_active.push_back(img);
      for (int64_t k = 0; k < K; ++k) {
        if (k < static_cast<int64_t>(live.size())) {
          next.add(history, live[k].first, live[k].second, live_logp[k], live_model[k]);
        } else {
          next.pad(history, live[0].first);
        }
      }
    }
    if (next_active.empty()) break;
    next.advance(scorer, t, K, history, beam_logp, beam_model, tokens);
    active = std::move(next_active);
    greedy_row = std::move(next_greedy_row);
  }

  std::vector<Caption> out(B);
  for (int64_t i = 0; i < B; ++i) {
    if (finished[i].empty()) throw std::logic_error("beam search finished an image without a caption");
    out[i] = *std::max_element(finished[i].begin(), finished[i].end(),
                               [](const Caption& x, const Caption& y) { return x.score < y.score; });
  }
  return out;
}

std::vector<Caption> constrained_beam_search(SequenceScorer& scorer, const FeatureViews& views, const SearchOptions& o,
                                             const WordGuides& guides) {
  check_inputs(views, o);
  torch::NoGradGuard no_grad;
  const int64_t B = views[0].size(0);
  const int64_t K = o.beam_size;
  const int64_t V = scorer.vocab_size();
  if (static_cast<int64_t>(guides.size()) != B) throw std::invalid_argument("one word guide per image expected");
  // Per image: the words that satisfy its constraint (all false: unconstrained), and its bans.
  std::vector<const std::vector<int64_t>*> required, banned;
  std::vector<bool> constrained(B);
  bool any_banned = false;
  for (int64_t i = 0; i < B; ++i) {
    required.push_back(&guides[i].required);
    banned.push_back(&guides[i].banned);
    constrained[i] = !guides[i].required.empty();
    any_banned = any_banned || !guides[i].banned.empty();
  }
  const auto required_mask = word_mask(required, V);
  const auto banned_mask = word_mask(banned, V);

  // Two beams of K per image: state 0 has not said a required word yet, state 1 has. Row
  // a*2K + s*K + k holds beam k of state s of active image a.
  const int64_t S = 2, rows_per_image = S * K;
  scorer.start(views);
  std::vector<int64_t> active(B);
  for (int64_t i = 0; i < B; ++i) active[i] = i;
  std::vector<std::vector<Caption>> finished[S] = {std::vector<std::vector<Caption>>(B), std::vector<std::vector<Caption>>(B)};
  std::vector<std::vector<int64_t>> history(B * rows_per_image);
  std::vector<double> beam_logp(B * rows_per_image, kNegInf);
  for (int64_t a = 0; a < B; ++a) beam_logp[a * rows_per_image] = 0;
  std::vector<double> beam_model = beam_logp;  // the model's own log-prob (beam_logp ranks)
  auto tokens = torch::full({B * rows_per_image}, Vocabulary::kStart, torch::kLong);
  const float ninf = -std::numeric_limits<float>::infinity();
  const BanRules rules(o, V);

  for (int t = 0; t <= o.max_length && !active.empty(); ++t) {
    const int64_t A = static_cast<int64_t>(active.size());
    auto logp = scorer.step(t == 0 ? tokens.narrow(0, 0, B) : tokens).to(torch::kFloat);
    if (t == 0) logp = logp.repeat_interleave(rows_per_image, 0);
    const auto model = model_step(scorer, logp, t == 0 ? rows_per_image : 1);
    const bool monotone = o.length_penalty == 0 && model.is_same(logp);  // as in beam_search
    auto masked = rules.mask(logp, history, t);
    if (any_banned) {
      masked.masked_fill_(banned_mask.index_select(0, as_index(active)).repeat_interleave(rows_per_image, 0), ninf);
    }
    auto prior = torch::tensor(beam_logp, torch::kDouble).to(torch::kFloat).unsqueeze(1);
    auto cand = (masked + prior).view({A, S, K, V});
    auto req = required_mask.index_select(0, as_index(active)).unsqueeze(1);  // (A, 1, V)
    auto from0 = cand.select(1, 0);
    // State 0 continues with any word but a required one; state 1 with any word, or is entered
    // from state 0 by a required word.
    torch::Tensor pools[S] = {
        from0.masked_fill(req, ninf).reshape({A, K * V}),
        torch::cat({cand.select(1, 1), from0.masked_fill(req.logical_not(), ninf)}, 1).reshape({A, 2 * K * V})};
    torch::Tensor values[S], indices[S];
    for (int s = 0; s < S; ++s) {
      auto top = pools[s].topk(std::min<int64_t>(2 * K, pools[s].size(1)), 1);
      values[s] = std::get<0>(top).to(torch::kDouble);
      indices[s] = std::get<1>(top);
    }
    auto logp_d = logp.accessor<float, 2>();
    auto model_d = model.accessor<float, 2>();

    std::vector<int64_t> next_active;
    NextBeams next;
    for (int64_t a = 0; a < A; ++a) {
      const int64_t img = active[a];
      std::vector<std::pair<int64_t, int64_t>> live[S];  // (row, token)
      std::vector<double> live_logp[S], live_model[S];
      for (int s = 0; s < S; ++s) {
        if (s == 1 && !constrained[img]) continue;
        auto va = values[s].accessor<double, 2>()[a];
        auto ia = indices[s].accessor<int64_t, 2>()[a];
        for (int64_t j = 0; j < values[s].size(1); ++j) {
          if (!std::isfinite(va[j])) break;
          const int64_t source = ia[j] / V, tok = ia[j] % V;
          // State 1's pool lists its own K beams first, then state 0's entering it.
          const int64_t row = a * rows_per_image + (s == 0 ? source : (source < K ? K + source : source - K));
          const double lp = beam_logp[row] + logp_d[row][tok];
          const double mlp = beam_model[row] + model_d[row][tok];
          if (tok == Vocabulary::kEnd) {
            if (j < K) finished[s][img].push_back({history[row], mlp, ranked(lp, history[row].size(), o.length_penalty)});
          } else if (static_cast<int64_t>(live[s].size()) < K) {
            live[s].emplace_back(row, tok);
            live_logp[s].push_back(lp);
            live_model[s].push_back(mlp);
          }
          if (static_cast<int64_t>(live[s].size()) == K && static_cast<int64_t>(finished[s][img].size()) >= K) break;
        }
      }
      // The answer comes from state 1 when it has one, so the search ends once state 1 is settled
      // (or, unconstrained, once state 0 is).
      const int goal = constrained[img] ? 1 : 0;
      double live_best = kNegInf, done_best = kNegInf;
      for (int s = 0; s <= goal; ++s) {
        for (double lp : live_logp[s]) live_best = std::max(live_best, lp);
      }
      for (const auto& c : finished[goal][img]) done_best = std::max(done_best, c.score);
      const bool done =
          live_best == kNegInf || static_cast<int64_t>(finished[goal][img].size()) >= K || (monotone && done_best >= live_best);
      if (done) continue;
      next_active.push_back(img);
      for (int s = 0; s < S; ++s) {
        for (int64_t k = 0; k < K; ++k) {
          if (k < static_cast<int64_t>(live[s].size())) {
            next.add(history, live[s][k].first, live[s][k].second, live_logp[s][k], live_model[s][k]);
          } else {
            next.pad(history, a * rows_per_image);  // a state may have no live beam at all
          }
        }
      }
    }
    if (next_active.empty()) break;
    next.advance(scorer, t, rows_per_image, history, beam_logp, beam_model, tokens);
    active = std::move(next_active);
  }

  std::vector<Caption> out(B);
  auto by_score = [](const Caption& x, const Caption& y) { return x.score < y.score; };
  for (int64_t i = 0; i < B; ++i) {
    const auto& pool = !finished[1][i].empty() ? finished[1][i] : finished[0][i];
    if (pool.empty()) throw std::logic_error("constrained beam search finished an image without a caption");
    out[i] = *std::max_element(pool.begin(), pool.end(), by_score);
  }
  return out;
}

std::vector<Caption> sample_captions(SequenceScorer& scorer, const FeatureViews& views, const SearchOptions& o) {
  auto gen = at::detail::createCPUGenerator(o.seed);
  return word_by_word(scorer, views, o, [&](const torch::Tensor& step_logp) {
    auto masked = step_logp / o.temperature;
    if (o.top_k > 0 && o.top_k < masked.size(1)) {
      auto kth = std::get<0>(masked.topk(o.top_k, 1)).select(1, o.top_k - 1).unsqueeze(1);
      masked = masked.masked_fill(masked < kth, -std::numeric_limits<float>::infinity());
    }
    return torch::multinomial(torch::softmax(masked, 1), 1, false, gen).squeeze(1);
  });
}

std::vector<Caption> search_captions(SequenceScorer& scorer, const FeatureViews& views, const SearchOptions& o,
                                     const WordGuides& guides) {
  std::vector<int64_t> guided, free;
  for (size_t i = 0; i < guides.size(); ++i) (guides[i].empty() ? free : guided).push_back(static_cast<int64_t>(i));
  if (!guided.empty() && !o.sample) {
    if (static_cast<int64_t>(guides.size()) != views[0].size(0)) throw std::invalid_argument("one word guide per image expected");
    if (free.empty()) return constrained_beam_search(scorer, views, o, guides);
    // Unconstrained images get exactly the caption they would get without tags.
    auto subset = [&](const std::vector<int64_t>& rows) {
      FeatureViews part;
      for (const auto& v : views) part.push_back(v.index_select(0, as_index(rows)));
      return part;
    };
    WordGuides guided_guides;
    for (int64_t i : guided) guided_guides.push_back(guides[static_cast<size_t>(i)]);
    auto guided_captions = constrained_beam_search(scorer, subset(guided), o, guided_guides);
    auto free_captions = search_captions(scorer, subset(free), o);
    std::vector<Caption> out(guides.size());
    for (size_t j = 0; j < guided.size(); ++j) out[static_cast<size_t>(guided[j])] = std::move(guided_captions[j]);
    for (size_t j = 0; j < free.size(); ++j) out[static_cast<size_t>(free[j])] = std::move(free_captions[j]);
    return out;
  }
  if (o.sample) return sample_captions(scorer, views, o);
  if (o.beam_size <= 1) return greedy_search(scorer, views, o);
  return beam_search(scorer, views, o);
}

std::vector<double> caption_log_probs(SequenceScorer& scorer, const FeatureViews& views,
                                      const std::vector<std::vector<int64_t>>& captions) {
  torch::NoGradGuard no_grad;
  const int64_t B = views[0].size(0);
  if (static_cast<int64_t>(captions.size()) != B) throw std::invalid_argument("one caption per image expected");
  size_t T = 0;
  for (const auto& c : captions) T = std::max(T, c.size() + 1);
  scorer.start(views);
  std::vector<double> total(B, 0.0);
  auto tokens = torch::full({B}, Vocabulary::kStart, torch::kLong);
  for (size_t t = 0; t < T; ++t) {
    const auto logp = scorer.step(tokens).to(torch::kFloat).contiguous();
    const auto logp_a = logp.accessor<float, 2>();
    std::vector<int64_t> next(B);
    for (int64_t i = 0; i < B; ++i) {
      const auto& c = captions[i];
      if (t < c.size()) {
        next[i] = c[t];
      } else {
        next[i] = Vocabulary::kEnd;  // past the end: feed <end>, add nothing more
      }
      if (t <= c.size()) total[i] += logp_a[i][next[i]];
    }
    tokens = as_index(next);
  }
  return total;
}

}  // namespace captioner
