#include "conv/conv_plan.h"

#include "kernels/cpu_dispatch.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>

namespace im2win {
namespace {

// Work items per thread the plan aims at when a layer must be split for the pool: two, so that
// a thread that starts late or is interrupted can be covered by the others.
constexpr int64_t kItemsPerThread = 2;
// Depthwise items are small (one channel's rows): a few more per thread, and at least this many.
constexpr int64_t kMinDepthwiseItems = 16;
// A split whose balance (SplitChoice::efficiency) reaches this, with kItemsPerThread items a
// thread, is even enough not to trade tile width for it.
constexpr double kEvenSplit = 0.85;
// From this many threads a split aims at kItemsPerThread items a thread even at the cost of a
// narrower tile; below it, one a thread is enough (a pool of 2 or 3 has little to cover).
constexpr int kLargePool = 4;
// A shared window panel (one per image and group, built once, read by every thread) is used up
// to this size; past it, each item builds its own block's panel (never the case for batch-1 CNNs:
// the panel is about the padded input's size).
constexpr int64_t kSharedPanelCapFloats = int64_t{16} << 20;
// Channels per run of a 1x1 conv's channel tiles (ConvPlan::channel_run): 16 KiB of AVX-512
// weights (32 channels a tile), 8 KiB of AVX2's. Measured on the Xeon, 1 thread, against one run:
// resnet50.16, .19, .22 0.93-0.94x on AVX-512, 0.90-0.95x on AVX2 (runs of 64: 0.94-0.97x; of
// 256: 0.92-0.94x).
constexpr int64_t kChannelRun = 128;
// What lines of Y written by two threads cost (they take turns owning each): measured on the Xeon
// in ResNet-50 at 2 threads (thread time in the network), 128->512 1x1 on 28x28 cut into 16 + 12
// rows did 0.87x the work of 14 + 14, whose blocks share a line in every plane. As a share of a
// 1x1 conv's work, and per line in multiply-adds (14 x 28 outputs x 128 each, beside the line).
constexpr double kSharedLineShare = 1.0 - 0.87;
constexpr double kSharedLineMacs = kSharedLineShare * 14 * 28 * 128;
// The pool sizes the split search considers (more threads than this share the items).
constexpr int kMaxPlannedThreads = 256;

// The columns left past a row's whole tiles of mv x `cols`, which a tail tile runs (ConvPlan::
// tail_cols): none where the whole row fits one tile. Flat rows (one run of positions per block)
// take one-row tails only, a column tail's or a one-row tile's: a taller tile would read rows past
// the run (past X's end for a 1x1 conv reading X in place), so there the last whole tile covers
// the rest, computing columns it drops, as it did before tails.
int TailColumns(const IsaKernels& isa, const ConvPlan& p, int mv, int64_t width, int cols) {
  const int tail = width > cols ? static_cast<int>(width % cols) : 0;
  const bool one_row = IsColumnTail(isa, mv, tail) || isa.channel_tile_rows[mv][tail] == 1;
  return tail > 0 && p.FlatRows() && !one_row ? 0 : tail;
}

// A channel tile's speed against one with IsaKernels::busy_accumulators: acc / (acc + 4) each, which
// fits the AVX2 tiles on a panel in L2 (Xeon: 8, 10 and 12 accumulators at 0.89, 0.95 and 1 of
// the speed).
double TileSpeed(const IsaKernels& isa, int accumulators) {
  auto rate = [](double acc) { return acc / (acc + 4.0); };
  return std::min(1.0, rate(accumulators) / rate(isa.busy_accumulators));
}
// Whole tiles of several rows ran 3-6% slower than one-row tiles on whole AVX2 layers (their
// broadcasts come from several window rows): 16x2x3 against 16x1x6 on vgg16.8, vgg16.3, resnet50.11.
constexpr double kSeveralRowsSpeed = 0.95;

// Channel tiles cover the block with rows x cols outputs (and the columns past the row's whole
// tiles with a tail tile of that many columns); picks the shape whose estimated time per useful
// output is least: the outputs computed (dropped ones included), each tile at TileSpeed, and a
// one-vector tile at IsaKernels::narrow_tile_speed (a broadcast then feeds one FMA, not two).
// keep_vectors: choose only the rows x cols for the channel vectors already chosen.
void ChooseChannelTile(const IsaKernels& isa, int64_t out_w, int64_t rows, ConvPlan* p, bool keep_vectors = false) {
  double best = -1.0;
  for (int mv = 1; mv <= isa.channel_vectors; ++mv) {
    if (keep_vectors && mv != p->tile_vectors) continue;
    if (!ChannelVectorsFit(isa, p->shape, mv)) continue;  // whole tiles only
    const int outputs = isa.max_outputs[mv];
    const int* const tile_rows = isa.channel_tile_rows[mv];
    // Time for `columns` columns of every row in tiles of tile_rows x tile_cols outputs.
    auto time = [&](int64_t columns, int tile_rows, int tile_cols) {
      return static_cast<double>(columns * CeilDiv(rows, tile_rows) * tile_rows) / TileSpeed(isa, tile_rows * tile_cols * mv);
    };
    // A one-column tail runs even runs of rows (TailRunRows), each an exact column tile.
    auto column_time = [&]() {
      const int64_t runs = CeilDiv(rows, tile_rows[1]);
      double t = 0.0;
      for (int64_t i = 0; i < runs; ++i) {
        const int64_t n = PartSize(rows, runs, i);
        t += static_cast<double>(n) / TileSpeed(isa, static_cast<int>(n) * mv);
      }
      return t;
    };
    for (int cols = outputs; cols >= 1; --cols) {  // on a tie, the widest tile (fewest rows to touch)
      const int ra = tile_rows[cols], tail = TailColumns(isa, *p, mv, out_w, cols);
      const bool column = IsColumnTail(isa, mv, tail);
      const double whole = (tail > 0 ? time(out_w - tail, ra, cols) : time(CeilDiv(out_w, cols) * cols, ra, cols)) /
                           (ra > 1 ? kSeveralRowsSpeed : 1.0);
      // A tail of several columns is timed as tiles of its full height, rows it no longer computes
      // counted (ConvPlan::ExactTail): the shapes stay those measured before exact tails.
      const double t = whole + (column ? column_time() : tail > 0 ? time(tail, tile_rows[tail], tail) : 0.0);
      const double score = static_cast<double>(out_w * rows) / t * (mv == isa.channel_vectors ? 1.0 : isa.narrow_tile_speed);
      if (score > best) {
        best = score;
        p->tile_vectors = mv;
        p->tile_rows = ra;
        p->tile_cols = cols;
      }
    }
  }
  p->tail_cols = TailColumns(isa, *p, p->tile_vectors, out_w, p->tile_cols);
  p->tail_rows = p->tail_cols > 0 ? isa.channel_tile_rows[p->tile_vectors][p->tail_cols] : 0;
}

// Position tiles compute whole vectors: picks the number of blocks (at least min_blocks, each
// block's rows within one of the others) that computes the fewest positions over the image, the
// fewest blocks on a tie. Blocks hold q or q + 1 rows, so a candidate costs O(1); at most
// kRowBlockCandidates are tried, so that a very tall image plans in bounded time.
constexpr int64_t kRowBlockCandidates = 256;
int64_t ChooseRowBlocks(int64_t out_h, int64_t row_len, int64_t min_blocks, int vector_len) {
  int64_t best_blocks = min_blocks;
  double best_cost = -1.0;
  const int64_t last = std::min({out_h, 2 * min_blocks, min_blocks + kRowBlockCandidates});
  auto vectors = [&](int64_t rows) { return std::ceil(static_cast<double>(rows) * row_len / vector_len); };
  for (int64_t blocks = min_blocks; blocks <= last; ++blocks) {
    const int64_t q = out_h / blocks, longer = out_h % blocks;
    const double cost = longer * vectors(q + 1) + (blocks - longer) * vectors(q);
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best_blocks = blocks;
    }
  }
  return best_blocks;
}

// The fewest rows a block of a pool's split holds a whole number of, so that every block begins on
// a 64-byte line in every plane of Y: two threads that write one line take turns owning it. 1 where
// a plane is no whole number of lines (14x14, 7x7: most planes then share a line at any row
// boundary); else it divides out_h (kSharedLineMacs: what a shared line costs).
int64_t LineRowQuantum(const ConvShape& s) {
  constexpr int64_t kLineFloats = 64 / sizeof(float);
  if (s.out_w <= 0 || (s.out_h * s.out_w) % kLineFloats != 0) return 1;
  return kLineFloats / std::gcd(s.out_w, kLineFloats);
}

// One way to cut rows: blocks of whole quanta of `quantum` rows, at least min_row_blocks of them.
struct RowCut {
  int64_t quantum, min_row_blocks;
};

// images x row_blocks x m_chunks items of nearly equal cost for `threads` threads. An item costs
// row_cost(its rows) x its channel tiles; ORT hands each thread a run of about items / threads, so
// the slowest thread takes ceil(items / threads) items of the largest cost. Picks the split with the
// best efficiency (work / (threads x slowest thread)); among near-equals, one with kItemsPerThread
// items a thread, else one a thread, and then the fewest items (each re-reads weights or panel rows).
// Rows are cut by each of `cuts` (blocks of whole lines of Y, ConvPlan::row_quantum, and blocks of
// any rows); where `line_rows` > 1 (planes of whole lines: blocks of line_rows rows begin on one),
// a split whose blocks share lines of Y loses the share shared_line_cost(its shortest block's
// rows) of its efficiency. rows_first: the layer copies its input into a panel, which channel
// chunks would build in a phase of their own and each read whole, so a split of rows alone is
// taken where it is otherwise as good.
template <typename RowCost, typename LineCost>
SplitChoice ChooseSplit(int64_t images, int64_t out_h, const RowCut* cuts, int cut_count, int64_t line_rows,
                        int64_t m_tiles, int threads, bool rows_first, const RowCost& row_cost,
                        const LineCost& shared_line_cost) {
  const int64_t t = std::clamp(threads, 1, kMaxPlannedThreads);
  SplitChoice only{cuts[cut_count - 1].min_row_blocks, 1, 1.0, cuts[cut_count - 1].quantum};
  if (t == 1) return only;
  const int64_t max_chunks = std::max<int64_t>(1, std::min(m_tiles, 2 * t));
  // Calls f(candidate) for every split considered; two passes (the best efficiency, then the
  // choice) keep the plan, made on every run, free of allocations.
  auto for_each = [&](const auto& f) {
    for (int i = 0; i < cut_count; ++i) {
      const RowCut& cut = cuts[i];
      const int64_t quanta = out_h / cut.quantum, min_blocks = cut.min_row_blocks;
      // Up to twice the fewest blocks: blocks of whole quanta may need that many to come out even.
      const int64_t max_blocks = std::max(min_blocks, std::min(quanta, std::max(min_blocks + 2 * t, 2 * min_blocks)));
      for (int64_t r = min_blocks; r <= max_blocks; ++r) {
        const int64_t q = quanta / r, longer = quanta % r;  // blocks of q or q + 1 quanta
        const double total = longer * row_cost((q + 1) * cut.quantum) + (r - longer) * row_cost(q * cut.quantum);
        const double largest_rows = row_cost((longer > 0 ? q + 1 : q) * cut.quantum);
        const bool on_lines = r == 1 || line_rows <= 1 ||
                              (q * cut.quantum % line_rows == 0 && (longer == 0 || (q + 1) * cut.quantum % line_rows == 0));
        const double kept = on_lines ? 1.0 : 1.0 - std::min(1.0, shared_line_cost(q * cut.quantum));
        for (int64_t c = 1; c <= max_chunks; ++c) {
          const int64_t items = images * r * c;
          const double largest = largest_rows * static_cast<double>(CeilDiv(m_tiles, c));
          const double slowest = static_cast<double>(CeilDiv(items, t)) * largest;
          f(SplitChoice{r, c, kept * images * total * m_tiles / (static_cast<double>(t) * slowest), cut.quantum});
        }
      }
    }
  };
  double best = 0.0;
  for_each([&](const SplitChoice& c) { best = std::max(best, c.efficiency); });
  auto items = [&](const SplitChoice& c) { return images * c.row_blocks * c.m_chunks; };
  // 0: kItemsPerThread items a thread or more, 1: one at least, 2: some threads idle.
  auto tier = [&](const SplitChoice& c) { return items(c) >= kItemsPerThread * t ? 0 : items(c) >= t ? 1 : 2; };
  SplitChoice chosen{0, 0, -1.0};
  auto shared_copy = [&](const SplitChoice& c) { return rows_first && c.m_chunks > 1; };
  auto key = [&](const SplitChoice& c) { return std::make_tuple(tier(c), items(c), shared_copy(c), -c.efficiency); };
  // Two items a thread may cost up to 0.05 of balance, but never take it below kEvenSplit where a
  // split within 0.02 of the best reaches it (resnet50.8 on a 512 KiB L2 at 8 threads: 0.82 for
  // 4 chunks of 6 tiles where 11 chunks of 2 give 0.87).
  const double two_a_thread_floor = std::min(best - 0.02, std::max(best - 0.05, kEvenSplit));
  for_each([&](const SplitChoice& c) {
    if (c.efficiency < best - 0.02 && !(tier(c) == 0 && c.efficiency >= two_a_thread_floor)) return;
    if (chosen.efficiency < 0 || key(c) < key(chosen)) chosen = c;
  });
  return chosen.efficiency < 0 ? only : chosen;
}

// Depthwise items (vector_len channels x a block of rows) each build their block's panel: its rows
// plus the windows' overhang, which more blocks build again. So among the splits that give each
// thread kItemsPerThread items at a balance of kEvenSplit (else one item, else any), the one whose
// slowest thread (ceil(items / threads) items of the tallest block) builds and computes the fewest
// rows, then the fewest items.
// (Cutting for balance alone took MobileNetV2's 960-channel 7x7 layer to 7 one-row blocks on 16
// threads, building 3 panel rows per output row: 2.3x the layer's instructions.)
int64_t ChooseDepthwiseRowBlocks(int64_t items, int64_t out_h, int64_t min_blocks, int64_t overhang, int threads) {
  const int64_t t = std::clamp(threads, 1, kMaxPlannedThreads);
  const int64_t last = std::max(min_blocks, std::min(out_h, min_blocks + 2 * t));
  auto tier = [&](int64_t n) {
    const bool even = static_cast<double>(n) >= kEvenSplit * static_cast<double>(t * CeilDiv(n, t));
    return n >= kItemsPerThread * t && even ? 0 : n >= t ? 1 : 2;
  };
  int64_t best = min_blocks;
  std::tuple<int, double, int64_t> best_key;
  for (int64_t r = min_blocks; r <= last; ++r) {
    const int64_t n = items * r;
    const std::tuple<int, double, int64_t> key{tier(n), static_cast<double>(CeilDiv(n, t) * (CeilDiv(out_h, r) + overhang)), n};
    if (r == min_blocks || key < best_key) {
      best = r;
      best_key = key;
    }
  }
  return best;
}

}  // namespace

// A window panel of up to this many floats stays in L2 beside the weights a channel block streams:
// 512 KiB, or half the core's L2 where that is less (Zen 3: 256 KiB of 512). Measured with 1 MiB
// L2 (Zen 4) and 2 MiB (Xeon): 512 KiB is the best there; 1 MiB on the Xeon lost 4-6% on AVX-512,
// 256 KiB was within +-4%.
int64_t PanelBudgetFloats(int64_t l2_bytes) {
  return std::min<int64_t>(512 << 10, PlanL2Bytes(l2_bytes) / 2) / static_cast<int64_t>(sizeof(float));
}

int64_t PlanL2Bytes(int64_t l2_bytes) { return l2_bytes > 0 ? l2_bytes : L2CacheBytes(); }

bool ChannelVectorsFit(const IsaKernels& isa, const ConvShape& shape, int vectors) {
  return vectors >= 1 && vectors <= isa.channel_vectors && isa.max_outputs[vectors] > 0 &&
         shape.outputs_per_group() % (vectors * isa.vector_len) == 0;
}

bool CanReadInPlace(const ConvShape& s) {
  return !(s.channels_per_group() == 1 && s.outputs_per_group() == 1) && s.kernel_h == 1 && s.kernel_w == 1 &&
         s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 && s.pad_left == 0 && s.pad_bottom == 0 &&
         s.pad_right == 0;
}

ConvPlan MakeConvPlan(const ConvShape& s, const Epilogue& epilogue, const IsaKernels& isa,
                      TilePreference preference, PlanTables tables, int threads, int channel_vectors,
                      DirectInput direct, int64_t l2_bytes) {
  l2_bytes = PlanL2Bytes(l2_bytes);
  ConvPlan p;
  p.shape = s;
  p.threads = std::clamp(threads, 1, kMaxPlannedThreads);
  p.epilogue = epilogue;
  p.isa = &isa;
  p.family = ChooseTileFamily(isa, s, preference);
  const WindowLayout one_row = MakeWindowLayout(s, 1);
  // Each output row adds one panel row per phase pair; the windows' overhang is paid once.
  const int64_t row_floats = std::max<int64_t>(1, one_row.channels * one_row.channel_stride / one_row.plane_rows);
  const int64_t overhang = one_row.plane_rows - 1;
  const int64_t max_rows = std::clamp<int64_t>(PanelBudgetFloats(l2_bytes) / row_floats - overhang, 1, s.out_h);
  int64_t row_blocks = CeilDiv(s.out_h, max_rows);
  if (p.family == TileFamily::kPositions)
    row_blocks = ChooseRowBlocks(s.out_h, one_row.row_len, row_blocks, isa.vector_len);
  int64_t rows = CeilDiv(s.out_h, row_blocks);
  const bool asked_vectors = ChannelVectorsFit(isa, s, channel_vectors);
  if (p.family == TileFamily::kChannels) {
    if (asked_vectors) p.tile_vectors = channel_vectors;
    ChooseChannelTile(isa, p.TileWidth(rows), p.TileHeight(rows), &p, asked_vectors);
  }
  p.m_unit = p.family == TileFamily::kChannels ? p.tile_vectors * isa.vector_len : kTileM;
  p.m_tiles = CeilDiv(s.outputs_per_group(), p.m_unit);
  const int64_t images = std::max<int64_t>(1, s.batch * s.group);
  p.depthwise = s.channels_per_group() == 1 && s.outputs_per_group() == 1;
  // A tile reads its C/group input rows at X's channel stride, H x W floats apart: with many
  // channels of large planes, copying the block's rows into a compact panel first was faster
  // (measured on the Xeon, batch 1: 256->64 on 56x56 -15% on AVX-512 and -16% on AVX2, 512->128
  // on 28x28 -15%/-14%), while small ones lose by the copy (32->16 on 112x112 +20-40%).
  const bool in_place_by_rule = !(s.channels_per_group() >= 256 && s.in_h * s.in_w >= 28 * 28);
  p.direct = CanReadInPlace(s) && direct != DirectInput::kOff && (direct == DirectInput::kOn || in_place_by_rule);
  p.m_chunks = 1;
  if (!p.depthwise) {
    // Split rows (at least the panel budget's blocks) and channel tiles for the pool. An item's cost:
    // the vectors of positions its rows hold (position tiles), or its rows (channel tiles).
    const int64_t row_len = one_row.row_len;
    const bool positions = p.family == TileFamily::kPositions;
    // Channel chunks of a conv that copies its input build one panel for all items in a phase of
    // their own (below), and each chunk reads all of it; split by rows, each item reads its own
    // rows (and a 1x1 conv's item copies them in parallel with the others' work). Measured on the
    // Xeon at 2 threads: resnet50.7, .13 and .5 0.75-0.79x the shared panel's time; in ResNet-50,
    // 128x28x28 3x3 as 4 blocks of 7 rows 0.86-0.90x the time of 4 chunks (three runs), 128x56x56
    // 3x3 at stride 2 as 4 blocks of 7 rows 0.87-0.93x that of 7 blocks x 2 chunks (AVX2: 0.89x, the
    // 28x28 ones 0.97-1.01x).
    const bool rows_first = !p.direct;
    // On a pool, blocks may hold whole quanta of rows (ConvPlan::row_quantum), so that each begins
    // on a line in every plane of Y, or any rows at the cost of the lines they share: for a 1x1
    // conv the share measured (kSharedLineShare); with overlapping windows kSharedLineMacs against
    // the block's own multiply-adds, Kh x Kw times a 1x1's an output, so that a 3x3 conv's blocks
    // of several rows may cut anywhere (ResNet-50's 128x28x28 3x3: 4 blocks of 7 rows, above) and
    // blocks of one row of 28 (a fifth of their work) do not.
    const int64_t line_rows = p.threads > 1 ? LineRowQuantum(s) : 1;
    RowCut cuts[2];
    int cut_count = 0;
    if (line_rows > 1 && line_rows <= max_rows)
      cuts[cut_count++] = {line_rows, CeilDiv(s.out_h / line_rows, max_rows / line_rows)};
    cuts[cut_count++] = {1, row_blocks};
    auto split_for = [&](int64_t m_tiles) {
      return ChooseSplit(
          images, s.out_h, cuts, cut_count, line_rows, m_tiles, p.threads, rows_first,
          [&](int64_t r) {
            return positions ? static_cast<double>(CeilDiv(r * row_len, isa.vector_len)) : static_cast<double>(r);
          },
          [&](int64_t rows) {
            if (overhang == 0) return kSharedLineShare;
            return kSharedLineMacs / (static_cast<double>(rows * s.out_w) * static_cast<double>(s.channels_per_group()) *
                                      static_cast<double>(s.kernel_h * s.kernel_w));
          });
    };
    SplitChoice split = split_for(p.m_tiles);
    // Few rows and wide channel tiles (1x1 convs on 7x7 and 14x14 at batch 1) leave a large pool
    // too few items, or items of uneven cost: a narrower channel tile, where one fits, doubles the
    // channel chunks (each tile then runs a little slower, but every thread gets its share). A pool
    // of 2 or 3 threads keeps the wide tile while the split is even with one item a thread
    // (mobilenetv2.25 on 2 threads: 2 items of 5 tiles each rather than 4 of 8-channel tiles).
    auto even = [&](const SplitChoice& c) {
      const int64_t items = images * c.row_blocks * c.m_chunks;
      const int64_t wanted = p.threads < kLargePool ? p.threads : kItemsPerThread * p.threads;
      return items >= wanted && c.efficiency >= kEvenSplit;
    };
    if (p.family == TileFamily::kChannels && !asked_vectors && p.threads > 1 && !even(split)) {
      for (int mv = p.tile_vectors - 1; mv >= 1; --mv) {
        if (!ChannelVectorsFit(isa, s, mv)) continue;
        const int64_t m_tiles = CeilDiv(s.outputs_per_group(), mv * isa.vector_len);
        const SplitChoice narrower = split_for(m_tiles);
        if (!even(narrower)) continue;
        split = narrower;
        p.tile_vectors = mv;
        p.m_unit = mv * isa.vector_len;
        p.m_tiles = m_tiles;
        break;
      }
    }
    // Past the budget's blocks, items would rebuild each other's panel rows (channel chunks: the
    // whole panel; more row blocks: the windows' overhang): one panel per image is built instead.
    // More row blocks without overhang (1x1) rebuild nothing: each item copies its own rows, in
    // parallel with the others' work rather than in a phase of its own (resnet50.7, .13 and .5 on
    // 2 threads: 0.75-0.79x the time of a shared panel).
    p.row_quantum = split.quantum;
    if (split.quantum > 1) row_blocks = cuts[0].min_row_blocks;
    const bool split_further = (split.row_blocks != row_blocks && overhang > 0) || split.m_chunks > 1;
    // The whole image's panel: per output row as one_row's, plus the windows' overhang once.
    const double per_row = static_cast<double>(one_row.channel_stride / one_row.plane_rows);
    const double channel_floats = per_row * static_cast<double>(s.out_h + overhang);
    const double whole = channel_floats * static_cast<double>(one_row.channels) * static_cast<double>(images);
    p.shared_panel = !p.direct && split_further && channel_floats <= static_cast<double>(kMaxOffset) &&
                     whole <= static_cast<double>(kSharedPanelCapFloats);
    row_blocks = split.row_blocks;
    p.m_chunks = split.m_chunks;
    p.split_efficiency = split.efficiency;
  }
  p.row_blocks = row_blocks;
  rows = p.TallestBlockRows();
  // Depthwise: a channel is little work, so an item takes several, enough for a few items a thread.
  const int64_t depthwise_items = std::max<int64_t>(kMinDepthwiseItems, 4 * kItemsPerThread * p.threads);
  if (p.depthwise)
    p.groups_per_item = std::max<int64_t>(1, s.group * std::max<int64_t>(1, s.batch) * row_blocks / depthwise_items);
  // Items of vector_len channels: the lanes kernel's, or the in-place one's.
  const bool channel_blocks = p.depthwise && isa.depthwise_lanes != nullptr && s.group % isa.vector_len == 0;
  // 3x3 at stride 2 reads X in place where the ISA splits columns in registers: the lanes kernel
  // transposes four inputs into its panel for every output there. It takes the lanes' items
  // (vector_len channels, a block of rows), with no panel to keep in budget. Measured on the Xeon
  // (AVX-512, 1 thread, MobileNetV2 per node, both kernels in one process, three runs):
  // 96x112x112 0.84-0.92x the lanes kernel's time, 144x56x56 0.65-0.67x, 192x28x28 0.56-0.59x,
  // 576x14x14 0.85-0.91x; whole MobileNetV2 0.974x (1 thread), 0.977x (2 threads).
  p.depthwise_stride2 = channel_blocks && isa.depthwise_3x3_stride2 != nullptr && s.kernel_h == 3 &&
                        s.kernel_w == 3 && s.stride_h == 2 && s.stride_w == 2 && s.dilation_h == 1 && s.dilation_w == 1;
  p.depthwise_lanes = channel_blocks && !p.depthwise_stride2;
  if (channel_blocks) {
    // vector_len channels side by side: the block's rows shrink to keep the panel in budget (read
    // in place, one block, unless cut for the pool).
    p.groups_per_item = isa.vector_len;
    const int64_t budget_rows = PanelBudgetFloats(l2_bytes) / (row_floats * isa.vector_len) - overhang;
    row_blocks = p.depthwise_stride2 ? 1 : CeilDiv(s.out_h, std::clamp<int64_t>(budget_rows, 1, s.out_h));
    const int64_t items = std::max<int64_t>(1, s.batch) * (s.group / isa.vector_len);
    if (p.threads > 1) {  // rows split for the pool, each item building its own rows' panel
      row_blocks = ChooseDepthwiseRowBlocks(items, s.out_h, row_blocks, overhang, p.threads);
    } else if (items * row_blocks < 4 && !p.depthwise_stride2) {  // a few items even for one thread: smaller panels
      row_blocks = std::min<int64_t>(s.out_h, CeilDiv(4, items));
    }
    rows = CeilDiv(s.out_h, row_blocks);
    p.row_blocks = row_blocks;
  }
  // A 1x1 block that position tiles read through a copy reads it as strips (ConvPlan::strip_panel).
  // Measured on the Xeon, 1 thread, caches flushed, against the plane-by-plane copy: 256->64 on
  // 56x56 0.91x the time on AVX-512, 0.95-0.97x on AVX2; 512->128 on 28x28 0.89-1.00x, 0.92-0.96x;
  // in ResNet-50 (ORT's profiler, 1 thread) its 256->64 and 512->128 convs 0.88-1.00x. In place of
  // X read where it lies, strips gained on 64->256 on 56x56 and 128->512 on 28x28 alone (0.89-0.94x)
  // and not inside the network, where X comes from the conv before it in L2.
  // Channel tiles copy a 1x1 block as strips of their columns where the reduction is long over a
  // small plane and one item runs all the block's channel tiles. Measured on Zen 3 (AVX2), ORT
  // sessions of one Conv + Relu interleaved, against X read in place: 1 thread, 1024->256 on 14x14
  // 0.88-0.97x the time, 2048->512 on 7x7 0.85-0.90x, 512->2048 on 7x7 0.91-0.94x, 1024->512 on
  // 14x14 0.92x; not kept where it did not gain: 256->1024 on 14x14 0.98-1.00x, 512->128 on 28x28
  // 0.98-1.02x, 256->64 on 56x56 1.12x, and at 2 threads with the block's channel tiles split
  // between items, 1024->256 on 14x14 1.09x and 256->1024 1.07x.
  const bool column_strips = s.channels_per_group() >= 512 && s.in_h * s.in_w <= 14 * 14 && p.m_chunks == 1;
  p.strip_panel = CanReadInPlace(s) && !p.shared_panel &&
                  (p.family == TileFamily::kChannels ? column_strips : !p.direct && kStripPositions % isa.tile_positions() == 0);
  // A shared panel holds every output row of the image; an item reads its rows at an offset.
  const int64_t panel_rows = p.shared_panel ? s.out_h : rows;
  if (p.family == TileFamily::kChannels) {
    // Again, as the rows may have been split; the channels per tile are settled (m_unit).
    ChooseChannelTile(isa, p.TileWidth(rows), p.TileHeight(rows), &p, true);
    p.layout = MakeWindowLayout(s, panel_rows, std::max(p.tile_rows, p.tail_rows), p.tile_cols);
  } else {
    p.layout = MakeWindowLayout(s, panel_rows, 0, isa.tile_positions());
  }
  // A 1x1 conv's channel tiles reduce over C in runs of kChannelRun channels, so that the run's
  // weights stay in L1 for every tile of the block instead of streaming from L2 for each tile.
  // (3x3 tiles were measured too, runs of 14-64 channels: 0.95-1.08x, so they keep one run.)
  const int64_t cg = s.channels_per_group();
  if (p.family == TileFamily::kChannels && s.kernel_h * s.kernel_w == 1 && cg > kChannelRun)
    p.channel_run = CeilDiv(cg, CeilDiv(cg, kChannelRun));
  // Channel tiles prefetch the next run's weights where L2 holds both runs beside the block's input
  // (a 3x3 block of 32 channels over C = 512 is 576 KiB: two fit the Xeon's 2 MiB, not Zen 4's
  // 1 MiB). Measured on the Xeon, 1 thread, weights flushed from the caches as in a network:
  // 512x7x7 3x3 0.87x the time (AVX2 0.80x), 2048->512 1x1 on 7x7 0.87-0.93x (AVX2 0.86x); weights
  // in cache within +-5%; whole ResNet-50 0.96x (1 thread), 0.95x (2 threads).
  if (p.family == TileFamily::kChannels) {
    const int64_t run_bytes = p.RunChannels() * s.kernel_h * s.kernel_w * std::max<int64_t>(p.m_unit, kChannelBlock) *
                              static_cast<int64_t>(sizeof(float));
    const int64_t input_floats = p.direct ? cg * p.TallestBlockRows() * s.out_w : p.layout.panel_floats();
    const int64_t input_bytes = input_floats * static_cast<int64_t>(sizeof(float));
    p.prefetch_weights = 2 * run_bytes + input_bytes <= l2_bytes;
  }
  if (p.depthwise_lanes && tables == PlanTables::kBuild) {
    const WindowLayout& L = p.layout;
    // Input column x (+ pad_left) = t * stride_w + phase: panel column t of its phase's slot.
    p.lanes_column_dest.assign(CeilDiv(s.in_w, isa.vector_len) * isa.vector_len, -1);
    for (int64_t x = std::max<int64_t>(0, -s.pad_left); x < s.in_w; ++x) {
      const int64_t t = (x + s.pad_left) / s.stride_w;
      const auto phase = std::find(L.col_phase.begin(), L.col_phase.end(), (x + s.pad_left) % s.stride_w);
      if (phase != L.col_phase.end() && t < L.row_len)
        p.lanes_column_dest[x] = static_cast<int32_t>((phase - L.col_phase.begin()) * L.plane + t);
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < s.out_w; ++j) p.lanes_output_offset.push_back(static_cast<int32_t>(r * L.row_len + j));
  }
  return p;
}

int64_t Im2colWorkspaceBytes(const ConvShape& s) {
  return s.channels_per_group() * s.kernel_h * s.kernel_w * s.out_h * s.out_w * static_cast<int64_t>(sizeof(float));
}

}  // namespace im2win
