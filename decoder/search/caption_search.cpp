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

namespace {

// One beam search for plain and guided captions. Every image keeps S states of K beams: S = 1 for
// plain search; S = 2 for a constraint (Anderson et al. 2017): state 0 has not said a required
// word yet, state 1 has. Row a*S*K + s*K + k holds beam k of state s of active image a.
class BeamSearch {
 public:
  BeamSearch(SequenceScorer& scorer, const FeatureViews& views, const SearchOptions& o, const WordGuides* guides)
      : scorer_(scorer),
        o_(o),
        B_(views[0].size(0)),
        K_(o.beam_size),
        V_(scorer.vocab_size()),
        S_(guides ? 2 : 1),
        R_(S_ * K_),
        rules_(o, V_) {
    if (guides) read_guides(*guides);
    scorer_.start(views);  // B rows: step 0 runs one row per image, see step()
    active_.resize(B_);
    for (int64_t i = 0; i < B_; ++i) active_[i] = i;
    history_.assign(B_ * R_, {});
    beam_logp_.assign(B_ * R_, kNegInf);
    for (int64_t a = 0; a < B_; ++a) beam_logp_[a * R_] = 0;  // one live beam per image at the start
    beam_model_ = beam_logp_;
    tokens_ = torch::full({B_ * R_}, Vocabulary::kStart, torch::kLong);
    // The greedy caption rides along as one of the K beams (the row holding it, -1 once it has
    // ended), so the result is never below greedy's by the search's own score without a second
    // decoding pass. Only plain search: under a constraint the greedy caption is no answer.
    greedy_row_.assign(B_, -1);
    if (S_ == 1) {
      for (int64_t a = 0; a < B_; ++a) greedy_row_[a] = a * K_;
    }
    for (auto& f : finished_) f.assign(B_, {});
  }

  std::vector<Caption> run() {
    for (int t = 0; t <= o_.max_length && !active_.empty(); ++t) {
      if (!step(t)) break;
    }
    // The answer comes from the last state that has one: a caption that met the constraint, else
    // the best that avoided the required words.
    std::vector<Caption> out(B_);
    for (int64_t i = 0; i < B_; ++i) {
      const auto& pool = !finished_[S_ - 1][i].empty() ? finished_[S_ - 1][i] : finished_[0][i];
      if (pool.empty() && S_ == 2) {  // no caption could meet the guide (search_captions keeps the unguided one)
        out[i].score = out[i].log_prob = kNegInf;
        continue;
      }
      if (pool.empty()) throw std::logic_error("beam search finished an image without a caption");
      out[i] = *std::max_element(pool.begin(), pool.end(), [](const Caption& x, const Caption& y) { return x.score < y.score; });
    }
    return out;
  }

 private:
  struct Candidate {
    int64_t row, token;
  };
  // One state's next beams for one image, best first: (row, token), ranking and model log-prob.
  struct Live {
    std::vector<std::pair<int64_t, int64_t>> beams;
    std::vector<double> logp, model;
    void add(int64_t row, int64_t token, double lp, double mlp) {
      beams.emplace_back(row, token);
      logp.push_back(lp);
      model.push_back(mlp);
    }
  };

  // One step's log-probabilities: what the search ranks by, and the model's own.
  struct Step {
    torch::TensorAccessor<float, 2> logp, model;
  };

  // The guides' word lists, sorted, with special tokens left out (no caption can be made to
  // contain <end>); ids outside the vocabulary are an error.
  void read_guides(const WordGuides& guides) {
    if (static_cast<int64_t>(guides.size()) != B_) throw std::invalid_argument("one word guide per image expected");
    auto words = [&](const std::vector<int64_t>& list) {
      std::vector<int64_t> out;
      for (int64_t w : list) {
        if (w < 0 || w >= V_) throw std::invalid_argument("guide word id " + std::to_string(w) + " outside the vocabulary");
        if (w >= Vocabulary::kNumSpecial) out.push_back(w);
      }
      std::sort(out.begin(), out.end());
      return out;
    };
    for (const auto& g : guides) {
      required_.push_back(words(g.required));
      banned_.push_back(words(g.banned));
      banned_before_.push_back(words(g.banned_before));
      within_.push_back(g.within);
      constrained_.push_back(!g.required.empty());
    }
    every_word_.resize(static_cast<size_t>(V_));
    for (int64_t w = 0; w < V_; ++w) every_word_[static_cast<size_t>(w)] = w;
  }

  // Each row's banned words at step t: the search options' rules and the image's guide; state 0
  // also may not say a required word without moving to state 1, nor a banned_before word, and
  // under `within` it closes at word `within`. `entering` gets state-0 rows'
  // bans without the required words. At the last step `scores` are masked already.
  std::vector<std::vector<int64_t>> row_bans(int t, bool last, std::vector<std::vector<int64_t>>& entering) const {
    auto bans = last ? std::vector<std::vector<int64_t>>(history_.size()) : rules_.words(history_, t);
    if (S_ == 1 || last) return bans;
    for (size_t a = 0; a < active_.size(); ++a) {
      const auto img = static_cast<size_t>(active_[a]);
      for (int64_t r = static_cast<int64_t>(a) * R_; r < static_cast<int64_t>(a + 1) * R_; ++r) {
        auto& ban = bans[static_cast<size_t>(r)];
        ban.insert(ban.end(), banned_[img].begin(), banned_[img].end());
        std::sort(ban.begin(), ban.end());
        if (r % R_ >= K_) continue;  // state 1
        ban.insert(ban.end(), banned_before_[img].begin(), banned_before_[img].end());
        std::sort(ban.begin(), ban.end());
        entering.push_back(ban);
        if (within_[img] > 0 && t + 1 >= within_[img]) {
          ban = every_word_;  // its last chance to say a required word is now: only by entering state 1
          continue;
        }
        ban.insert(ban.end(), required_[img].begin(), required_[img].end());
        std::sort(ban.begin(), ban.end());
      }
    }
    return bans;
  }

  // Each (image, state)'s best 2K continuations, best first: a state's own beams with any
  // allowed word, and for state 1 also state 0's beams with a required word (after its own
  // beams on equal scores).
  std::vector<std::vector<Candidate>> candidates(const torch::Tensor& scores, const std::vector<std::vector<int64_t>>& bans,
                                                 const std::vector<std::vector<int64_t>>& entering) const {
    const int64_t A = static_cast<int64_t>(active_.size()), take = std::min<int64_t>(2 * K_, K_ * V_);
    const float* p = scores.data_ptr<float>();
    const auto own = best_beam_candidates(p, A * S_, K_, V_, beam_logp_, bans, take);
    std::vector<std::vector<Candidate>> out(own.size());
    for (int64_t b = 0; b < A * S_; ++b) {
      std::vector<BeamCandidate> list = own[b];
      if (b % S_ == 1 && !entering.empty()) {
        const int64_t a = b / S_;
        for (int64_t k = 0; k < K_; ++k) {
          const int64_t row = a * R_ + k;
          const float prior = static_cast<float>(beam_logp_[row]);
          for (int64_t w : required_[active_[a]]) {
            const float s = p[row * V_ + w] + prior;
            if (std::isfinite(s) && !std::binary_search(entering[a * K_ + k].begin(), entering[a * K_ + k].end(), w))
              list.push_back({s, -(1 + row * V_ + w)});  // negative index: entering from state 0
          }
        }
        std::stable_sort(list.begin(), list.end(),
                         [](const BeamCandidate& x, const BeamCandidate& y) { return x.score > y.score; });
        if (static_cast<int64_t>(list.size()) > take) list.resize(take);
      }
      for (const auto& c : list) {
        if (c.index < 0) {
          out[b].push_back({(-c.index - 1) / V_, (-c.index - 1) % V_});
        } else {
          out[b].push_back({b * K_ + c.index / V_, c.index % V_});
        }
      }
    }
    return out;
  }

  // Ranks an image's candidates into its state's live beams and finished captions. Only an <end>
  // among the top K finishes a caption, as in the usual formulation; with K = 1 beam search is
  // exactly greedy.
  void collect(const std::vector<Candidate>& cands, int64_t img, int s, const Step& st, Live& live) {
    auto& done = finished_[s][img];
    for (size_t j = 0; j < cands.size(); ++j) {
      const auto [row, tok] = cands[j];
      const double lp = beam_logp_[row] + st.logp[row][tok], mlp = beam_model_[row] + st.model[row][tok];
      if (tok == Vocabulary::kEnd) {
        if (static_cast<int64_t>(j) < K_)
          done.push_back({history_[row], mlp, ranked(lp, history_[row].size(), o_.length_penalty)});
      } else if (static_cast<int64_t>(live.beams.size()) < K_) {
        live.add(row, tok, lp, mlp);
      }
      if (static_cast<int64_t>(live.beams.size()) == K_ && static_cast<int64_t>(done.size()) >= K_) break;
    }
  }

  // Keeps image a's greedy continuation among its live beams (plain search only); it displaces
  // the K-th candidate only when it has fallen out of the top K. Returns its position, or -1.
  int64_t ride_greedy(int64_t a, const torch::Tensor& scores, const std::vector<std::vector<int64_t>>& bans, const Step& st,
                      Live& live) {
    const int64_t g = greedy_row_[a];
    if (g < 0) return -1;
    const int64_t tok = best_allowed_word(scores.data_ptr<float>() + g * V_, V_, bans[g]);
    const double lp = beam_logp_[g] + st.logp[g][tok], mlp = beam_model_[g] + st.model[g][tok];
    if (tok == Vocabulary::kEnd) {
      // Unless the candidates already finished it: a caption counted twice would fill the K
      // finished places early and end the search before a better one.
      auto& done = finished_[0][active_[a]];
      const bool counted = std::any_of(done.begin(), done.end(), [&](const Caption& c) { return c.tokens == history_[g]; });
      if (!counted) done.push_back({history_[g], mlp, ranked(lp, history_[g].size(), o_.length_penalty)});
      return -1;
    }
    const auto it = std::find(live.beams.begin(), live.beams.end(), std::make_pair(g, tok));
    if (it != live.beams.end()) return it - live.beams.begin();
    if (static_cast<int64_t>(live.beams.size()) < K_) {
      live.add(g, tok, lp, mlp);
    } else {
      live.beams.back() = {g, tok};
      live.logp.back() = lp;
      live.model.back() = mlp;
    }
    return static_cast<int64_t>(live.beams.size()) - 1;
  }

  // Whether an image needs no more steps: the state its answer comes from (1 under a constraint)
  // has K captions or nothing left to extend, or, scores only falling as captions grow (no length
  // penalty, no MI), a finished caption that no live beam can overtake. Stopping while the greedy
  // caption is unfinished is only safe when nothing it can still become could beat what is finished.
  bool settled(int64_t img, const Live* live, bool monotone, int64_t greedy_k) const {
    const int goal = S_ == 2 && constrained_[img] ? 1 : 0;
    const auto& done = finished_[goal][img];
    bool any_live = false;
    double live_best = kNegInf, done_best = kNegInf;
    for (int s = 0; s <= goal; ++s) {
      any_live = any_live || !live[s].beams.empty();
      for (double lp : live[s].logp) live_best = std::max(live_best, lp);
    }
    for (const auto& c : done) done_best = std::max(done_best, c.score);
    const bool overtaken = monotone && !done.empty();
    if (!any_live || static_cast<int64_t>(done.size()) >= K_ || (overtaken && done_best >= live_best)) {
      return greedy_k < 0 || (overtaken && done_best >= live[0].logp[greedy_k]);
    }
    return false;
  }

  // Scores every active image's beams for one more word and keeps the best K per state; false
  // once every image is settled.
  bool step(int t) {
    // Step 0 runs one row per image: all of an image's beams start from the same <start>, so the
    // copies only come into being as the rows the first re-ranking selects.
    auto logp = scorer_.step(t == 0 ? tokens_.narrow(0, 0, B_) : tokens_).to(torch::kFloat);
    if (t == 0) logp = logp.repeat_interleave(R_, 0);
    const auto model = model_step(scorer_, logp, t == 0 ? R_ : 1);
    const bool monotone = o_.length_penalty == 0 && model.is_same(logp);
    // The bans are skipped while ranking rather than written into a masked copy; the last step
    // (only <end> left) is rare enough to mask.
    const bool last = t >= o_.max_length;
    const auto scores = (last ? rules_.mask(logp, history_, t) : logp).contiguous();
    std::vector<std::vector<int64_t>> entering;
    const auto bans = row_bans(t, last, entering);
    const auto cands = candidates(scores, bans, entering);
    const Step st{logp.accessor<float, 2>(), model.accessor<float, 2>()};

    std::vector<int64_t> next_active, next_greedy_row;
    NextBeams next;
    for (int64_t a = 0; a < static_cast<int64_t>(active_.size()); ++a) {
      const int64_t img = active_[a];
      Live live[2];
      for (int s = 0; s < S_; ++s) {
        if (s == 0 || constrained_[img]) collect(cands[a * S_ + s], img, s, st, live[s]);
      }
      const int64_t greedy_k = ride_greedy(a, scores, bans, st, live[0]);
      if (settled(img, live, monotone, greedy_k)) continue;
      next_greedy_row.push_back(greedy_k >= 0 ? static_cast<int64_t>(next_active.size()) * R_ + greedy_k : -1);
      next_active.push_back(img);
      for (int s = 0; s < S_; ++s) {
        for (int64_t k = 0; k < K_; ++k) {
          if (k < static_cast<int64_t>(live[s].beams.size())) {
            next.add(history_, live[s].beams[k].first, live[s].beams[k].second, live[s].logp[k], live[s].model[k]);
          } else {
            next.pad(history_, a * R_);  // a state may have fewer than K live beams, or none
          }
        }
      }
    }
    if (next_active.empty()) return false;
    next.advance(scorer_, t, R_, history_, beam_logp_, beam_model_, tokens_);
    active_ = std::move(next_active);
    greedy_row_ = std::move(next_greedy_row);
    return true;
  }

  SequenceScorer& scorer_;
  const SearchOptions& o_;
  const int64_t B_, K_, V_;
  const int64_t S_, R_;  // states per image, rows per image (S*K)
  const BanRules rules_;
  std::vector<std::vector<int64_t>> required_, banned_, banned_before_;  // per image, from its guide
  std::vector<int> within_;                                              // per image, from its guide
  std::vector<int64_t> every_word_;                                      // 0 .. V-1
  std::vector<bool> constrained_;                                        // per image: has required words
  std::vector<int64_t> active_;                                          // image of each active slot
  std::vector<std::vector<int64_t>> history_;                            // per row: the words so far
  std::vector<double> beam_logp_, beam_model_;                           // per row: ranking score, model log-prob
  torch::Tensor tokens_;                                                 // per row: the last word
  std::vector<int64_t> greedy_row_;                                      // per active image: the greedy caption's row, or -1
  std::vector<std::vector<Caption>> finished_[2];                        // per state, per image
};

}  // namespace

std::vector<Caption> beam_search(SequenceScorer& scorer, const FeatureViews& views, const SearchOptions& o) {
  check_inputs(views, o);
  torch::NoGradGuard no_grad;
  return BeamSearch(scorer, views, o, nullptr).run();
}

std::vector<Caption> constrained_beam_search(SequenceScorer& scorer, const FeatureViews& views, const SearchOptions& o,
                                             const WordGuides& guides) {
  check_inputs(views, o);
  torch::NoGradGuard no_grad;
  return BeamSearch(scorer, views, o, &guides).run();
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

namespace {

// Whether an unguided caption already does what its guide asks: says a required word (or one
// of also_met_by) and no banned one.
bool meets(const Caption& c, const WordGuide& g) {
  const auto has = [&](const std::vector<int64_t>& words) {
    return std::any_of(c.tokens.begin(), c.tokens.end(),
                       [&](int64_t w) { return std::find(words.begin(), words.end(), w) != words.end(); });
  };
  if (has(g.banned)) return false;
  if (g.required.empty() || has(g.required) || has(g.also_met_by)) return true;
  const size_t lead = g.within > 0 ? std::min(c.tokens.size(), static_cast<size_t>(g.within)) : c.tokens.size();
  return std::any_of(c.tokens.begin(), c.tokens.begin() + static_cast<std::ptrdiff_t>(lead), [&](int64_t w) {
    return std::find(g.trusted_leads.begin(), g.trusted_leads.end(), w) != g.trusted_leads.end();
  });
}

}  // namespace

std::vector<Caption> search_captions(SequenceScorer& scorer, const FeatureViews& views, const SearchOptions& o,
                                     const WordGuides& guides) {
  if (o.sample) return sample_captions(scorer, views, o);
  std::vector<Caption> out = o.beam_size <= 1 ? greedy_search(scorer, views, o) : beam_search(scorer, views, o);
  if (guides.empty()) return out;
  if (static_cast<int64_t>(guides.size()) != views[0].size(0)) throw std::invalid_argument("one word guide per image expected");
  std::vector<int64_t> again;
  for (size_t i = 0; i < guides.size(); ++i) {
    if (!guides[i].empty() && !meets(out[i], guides[i])) again.push_back(static_cast<int64_t>(i));
  }
  if (again.empty()) return out;
  FeatureViews part;
  for (const auto& v : views) part.push_back(v.index_select(0, as_index(again)));
  WordGuides part_guides;
  for (int64_t i : again) part_guides.push_back(guides[static_cast<size_t>(i)]);
  auto guided = constrained_beam_search(scorer, part, o, part_guides);
  for (size_t j = 0; j < again.size(); ++j) {
    if (std::isfinite(guided[j].score)) out[static_cast<size_t>(again[j])] = std::move(guided[j]);
  }
  return out;
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
