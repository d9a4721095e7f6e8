// racecheck.cpp — what compute-sanitizer's racecheck does, for the emulator: shadow state for
// every 4-byte word of shared memory and of device memory that a launch touches, and a report
// when two accesses conflict (at least one a write) without an order between them:
//
//  * two threads of one block, within one barrier interval: only `__syncthreads()` orders a
//    block's threads (warp shuffles and the emulated mma exchange do not: on the GPU they
//    order nothing in memory either);
//  * two blocks of one launch, on a device word: blocks are never ordered.
//
// The blocks of a launch run one at a time in this mode (runtime.cpp), so "earlier" is well
// defined and a word needs only a few remembered accesses (WordShadow) to tell whether any
// earlier one conflicts. The first hazard stops the launch (EMU_FAULT_RACE); its report names
// the kernel, the block(s), both threads, the word (a shared variable and its index, or an
// allocation and its offset), and both accesses' source lines, looked up with addr2line once
// the launch is over. A read of a shared word that no thread of the block has written yet is
// reported too. Granularity: 4-byte words (two threads writing different bytes of one word
// would be reported).
#include "runtime.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <spawn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>

namespace emu {
namespace {

// Source addresses are kept as 32-bit offsets from a function of the kernels' object.
std::uintptr_t pc_base() { return (std::uintptr_t)&emu_kernel_count; }
std::int32_t pc_offset(std::uintptr_t pc)
{
    const long long d = (long long)pc - (long long)pc_base();
    return d > INT32_MIN && d < INT32_MAX && pc != 0 ? (std::int32_t)d : 0;
}

// Device memory's shadow, in pages of 1024 words, made on first touch and cleared per launch.
constexpr std::uint64_t PAGE_WORDS = 1024;
struct Page {
    std::unique_ptr<WordShadow[]> words;
    bool touched = false;  // by this launch
};
std::unordered_map<std::uint64_t, Page> g_pages;
std::vector<Page*> g_touched;
std::uint64_t g_last_page = ~0ull;
WordShadow* g_last = nullptr;

WordShadow& global_word(std::uint64_t word)
{
    const std::uint64_t page = word / (PAGE_WORDS * 4);
    if (page != g_last_page) {
        Page& p = g_pages[page];
        if (!p.words) p.words.reset(new WordShadow[PAGE_WORDS]);
        if (!p.touched) {
            p.touched = true;
            g_touched.push_back(&p);
        }
        g_last_page = page;
        g_last = p.words.get();
    }
    return g_last[(word / 4) % PAGE_WORDS];
}

// The hazard found, until race_report formats it.
struct Hazard {
    int kind = EMU_HAZARD_NONE;
    bool shared = false;
    std::uint64_t word = 0;      // device address, or the offset in the shared window
    const SharedDecl* var = nullptr;
    unsigned var_offset = 0;     // byte offset of the word in `var`
    Access earlier, now;
    bool earlier_write = false, now_write = false;
    unsigned size = 0;
    const char* kernel = nullptr;
    dim3 grid, block;
} g_hazard;

bool none(const Access& a) { return a.tid == Access::NONE; }

// Is an earlier access `e` unordered with the current one `c`?
bool unordered(const Access& e, const Access& c)
{
    if (none(e)) return false;
    if (e.block != c.block) return true;  // blocks of one launch are never ordered
    return e.gen == c.gen && e.tid != c.tid;
}

[[noreturn]] void report(Run& r, int kind, const Access& earlier,
                         bool earlier_write, const Access& now, bool write, unsigned size,
                         bool shared, std::uint64_t word, const SharedVar* var)
{
    Hazard& h = g_hazard;
    h = Hazard{};
    h.kind = kind;
    h.shared = shared;
    h.word = word;
    if (var) h.var = var->decl, h.var_offset = (unsigned)word - var->offset;
    h.earlier = earlier;
    h.earlier_write = earlier_write;
    h.now = now;
    h.now_write = write;
    h.size = size;
    h.kernel = r.kernel;
    h.grid = r.grid;
    h.block = r.block;
    fault_here(r, EMU_FAULT_RACE,
               shared ? (std::uint64_t)(uintptr_t)(r.shared_base + word) : word, size, write,
               "race (report made after the launch)");
}

// One access of the word `s` by `c`: report a conflict with an earlier access, then remember it.
void access_word(Run& r, WordShadow& s, const Access& c, bool write, unsigned size, bool shared,
                 std::uint64_t word, const SharedVar* var)
{
    if (write) {
        if (unordered(s.write, c))
            report(r, EMU_HAZARD_WRITE_AFTER_WRITE, s.write, true, c, true, size, shared, word,
                   var);
        for (const Access* e : {&s.read, &s.read_block, &s.read_interval})
            if (unordered(*e, c))
                report(r, EMU_HAZARD_WRITE_AFTER_READ, *e, false, c, true, size, shared, word,
                       var);
        s.write = c;
        s.written = true;
        return;
    }
    if (shared && !s.written)
        report(r, EMU_HAZARD_UNINITIALISED_SHARED_READ, Access{}, false, c, false, size, shared,
               word, var);
    if (unordered(s.write, c))
        report(r, EMU_HAZARD_READ_AFTER_WRITE, s.write, true, c, false, size, shared, word, var);
    // Keep `read_block` the last read by another block than the last read's, and
    // `read_interval` a read by another thread in the last read's block and interval.
    if (!none(s.read)) {
        if (s.read.block != c.block) s.read_block = s.read;
        if (s.read.block == c.block && s.read.gen == c.gen) {
            if (s.read.tid != c.tid) s.read_interval = s.read;
        } else {
            s.read_interval = Access{};
        }
    }
    s.read = c;
}

Access here(const Run& r, std::uintptr_t pc)
{
    Access a;
    a.block = r.block_linear;
    a.gen = r.gen;
    a.tid = (std::uint16_t)r.cur;
    a.pc = pc_offset(pc);
    return a;
}

// "file:line (function)" of code addresses, from one addr2line process kept running (reading
// the debug info costs it a fraction of a second, once), and a cache; "" where it cannot say.
std::unordered_map<std::int32_t, std::string> g_lines;

struct Addr2line {
    FILE* to = nullptr;
    FILE* from = nullptr;
    bool failed = false;
} g_addr2line;

// Starts addr2line on `file`, reading addresses from its stdin.
bool start_addr2line(const std::string& file)
{
    int in[2], out[2];
    if (pipe(in) != 0) return false;
    if (pipe(out) != 0) {
        close(in[0]), close(in[1]);
        return false;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    for (int fd : {in[0], in[1], out[0], out[1]}) posix_spawn_file_actions_addclose(&actions, fd);
    const char* argv[] = {"addr2line", "-a", "-C", "-f", "-i", "-e", file.c_str(), nullptr};
    pid_t pid;
    const int rc = posix_spawnp(&pid, "addr2line", &actions, nullptr, (char* const*)argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(in[0]);
    close(out[1]);
    if (rc != 0) {
        close(in[1]), close(out[0]);
        return false;
    }
    g_addr2line.to = fdopen(in[1], "w");
    g_addr2line.from = fdopen(out[0], "r");
    return g_addr2line.to && g_addr2line.from;
}

// addr2line's answer for one address: (function, file:line) pairs, innermost inlined frame
// first. The query is followed by address 0, whose answer (its address line) marks the end.
std::vector<std::string> ask_addr2line(std::uintptr_t address)
{
    std::vector<std::string> lines;
    std::fprintf(g_addr2line.to, "0x%llx\n0x0\n", (unsigned long long)address);
    std::fflush(g_addr2line.to);
    char buf[2048];
    int addresses = 0;
    while (std::fgets(buf, sizeof buf, g_addr2line.from)) {
        std::string l = buf;
        while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) l.pop_back();
        if (l.rfind("0x", 0) == 0 && ++addresses == 2) {
            // The end marker's own answer: two more lines ("??", "??:0").
            std::fgets(buf, sizeof buf, g_addr2line.from);
            std::fgets(buf, sizeof buf, g_addr2line.from);
            return lines;
        }
        if (addresses == 1 && l.rfind("0x", 0) != 0) lines.push_back(l);
    }
    g_addr2line.failed = true;  // it went away
    return {};
}

void look_up_lines(std::initializer_list<std::int32_t> pc_offsets)
{
    for (const std::int32_t off : pc_offsets) {
        if (off == 0 || g_lines.count(off) || g_addr2line.failed) continue;
        g_lines[off] = "";
        const std::uintptr_t pc = pc_base() + off - 1;  // inside the call, not after it
        Dl_info info{};
        if (!dladdr((void*)pc, &info) || !info.dli_fbase) continue;
        if (!g_addr2line.to) {
            // The kernels' object: the executable, or the library the emulator is linked into.
            std::string file = info.dli_fname ? info.dli_fname : "";
            if (file.empty() || file.find('/') == std::string::npos ||
                access(file.c_str(), R_OK) != 0)
                file = "/proc/self/exe";
            if (!start_addr2line(file)) {
                g_addr2line.failed = true;
                continue;
            }
        }
        const auto* elf = (const ElfW(Ehdr)*)info.dli_fbase;
        const std::vector<std::string> lines =
            ask_addr2line(elf->e_type == ET_DYN ? pc - (std::uintptr_t)info.dli_fbase : pc);
        if (lines.size() < 2 || lines[1].empty() || lines[1][0] == '?') continue;
        std::string where = lines[1];
        const size_t slash = where.rfind('/');
        if (slash != std::string::npos) where = where.substr(slash + 1);
        const size_t disc = where.find(" (discriminator");
        if (disc != std::string::npos) where = where.substr(0, disc);
        std::string fn = lines[0].size() > 100 ? lines[0].substr(0, 97) + "..." : lines[0];
        g_lines[off] = fn.empty() || fn == "??" ? where : where + " (" + fn + ")";
    }
}

std::string source_line(std::int32_t pc_off)
{
    auto it = g_lines.find(pc_off);
    return it == g_lines.end() ? "" : it->second;
}

const char* hazard_name(int kind)
{
    switch (kind) {
    case EMU_HAZARD_READ_AFTER_WRITE: return "Read-after-write";
    case EMU_HAZARD_WRITE_AFTER_READ: return "Write-after-read";
    case EMU_HAZARD_WRITE_AFTER_WRITE: return "Write-after-write";
    default: return "Uninitialised read";
    }
}

// `name[i][j]` for byte `off` of a shared variable.
std::string element(const SharedDecl& d, unsigned off)
{
    std::string s = d.name;
    unsigned elem = off / (d.elem_bytes ? d.elem_bytes : 1);
    if (d.rank == 0) return s;
    if (d.rank > 3) return s + "[flat " + std::to_string(elem) + "]";
    unsigned idx[3] = {0, 0, 0};
    for (int k = (int)d.rank - 1; k >= 0; --k) {
        idx[k] = elem % d.extent[k];
        elem /= d.extent[k];
    }
    for (unsigned k = 0; k < d.rank; ++k) s += "[" + std::to_string(idx[k]) + "]";
    return s;
}

}  // namespace

void race_begin_launch()
{
    // The shadow is ~18 bytes per byte of data touched: kept between launches (clearing is
    // cheaper than allocating), up to 4096 pages (~280 MiB), then dropped.
    if (g_pages.size() > 4096) {
        g_pages.clear();
    } else {
        for (Page* p : g_touched) {
            std::fill(p->words.get(), p->words.get() + PAGE_WORDS, WordShadow{});
            p->touched = false;
        }
    }
    g_touched.clear();
    g_last_page = ~0ull;
    g_last = nullptr;
}

void race_begin_block(Run& r)
{
    if (r.shared_shadow.empty()) r.shared_shadow.resize(SHARED_WINDOW / 4);
    std::fill(r.shared_shadow.begin(), r.shared_shadow.begin() + (r.shared_end + 3) / 4,
              WordShadow{});
}

void race_shared(Run& r, unsigned off, unsigned size, bool write, std::uintptr_t pc)
{
    const Access c = here(r, pc);
    const SharedVar* var = shared_var_at(r, off);
    for (unsigned w = off & ~3u; w < off + size; w += 4)
        access_word(r, r.shared_shadow[w / 4], c, write, size, true, w, var);
}

void race_global(Run& r, std::uint64_t a, unsigned size, bool write, std::uintptr_t pc)
{
    const Access c = here(r, pc);
    for (std::uint64_t w = a & ~(std::uint64_t)3; w < a + size; w += 4)
        access_word(r, global_word(w), c, write, size, false, w, nullptr);
}

void race_report(EmuFault& f)
{
    const Hazard& h = g_hazard;
    f.hazard = h.kind;
    f.shared = h.shared ? 1 : 0;
    Run dims;  // for the index arithmetic of thread_index / block_index
    dims.grid = h.grid;
    dims.block = h.block;
    const uint3 eb = block_index(dims, h.earlier.block), et = thread_index(dims, h.earlier.tid);
    const uint3 nb = block_index(dims, h.now.block), nt = thread_index(dims, h.now.tid);
    if (!none(h.earlier)) {
        f.other_block[0] = eb.x, f.other_block[1] = eb.y, f.other_block[2] = eb.z;
        f.other_thread[0] = et.x, f.other_thread[1] = et.y, f.other_thread[2] = et.z;
    }
    char word[320];
    if (h.shared && h.var) {
        const char* file =
            std::strrchr(h.var->file, '/') ? std::strrchr(h.var->file, '/') + 1 : h.var->file;
        std::snprintf(word, sizeof word, "__shared__ %s (byte %u of `%s`, %s:%d)",
                      element(*h.var, h.var_offset).c_str(), h.var_offset, h.var->name, file,
                      h.var->line);
    } else {
        std::uint64_t id = 0, start = 0, size = 0;
        if (allocation_of(h.word, &id, &start, &size))
            std::snprintf(word, sizeof word,
                          "device word 0x%llx (allocation #%llu of %llu bytes, byte %llu)",
                          (unsigned long long)h.word, (unsigned long long)id,
                          (unsigned long long)size, (unsigned long long)(h.word - start));
        else
            std::snprintf(word, sizeof word, "device word 0x%llx", (unsigned long long)h.word);
    }
    auto who = [&](const uint3& t, const uint3& b) {
        char s[96];
        if (h.shared || h.earlier.block == h.now.block)
            std::snprintf(s, sizeof s, "thread (%u,%u,%u)", t.x, t.y, t.z);
        else
            std::snprintf(s, sizeof s, "thread (%u,%u,%u) of block (%u,%u,%u)", t.x, t.y, t.z,
                          b.x, b.y, b.z);
        return std::string(s);
    };
    look_up_lines({h.now.pc, h.earlier.pc});
    auto at = [](std::int32_t pc) {
        const std::string s = source_line(pc);
        return s.empty() ? std::string() : " at " + s;
    };
    std::string text;
    char head[512];
    if (h.kind == EMU_HAZARD_UNINITIALISED_SHARED_READ) {
        std::snprintf(head, sizeof head,
                      "Uninitialised __shared__ read of size %u bytes: %s in block (%u,%u,%u) of "
                      "%s, which no thread of the block has written\n",
                      h.size, word, nb.x, nb.y, nb.z, h.kernel);
        text = head;
        text += "    Read by " + who(nt, nb) + at(h.now.pc);
    } else {
        const bool blocks = !h.shared && h.earlier.block != h.now.block;
        if (blocks)
            std::snprintf(head, sizeof head,
                          "Race reported: %s hazard on %s between blocks of one launch of %s\n",
                          hazard_name(h.kind), word, h.kernel);
        else
            std::snprintf(head, sizeof head, "Race reported: %s hazard on %s in block (%u,%u,%u) of %s\n",
                          hazard_name(h.kind), word, nb.x, nb.y, nb.z, h.kernel);
        text = head;
        text += std::string("    ") + (h.now_write ? "Write" : "Read") + " by " + who(nt, nb) +
                at(h.now.pc) + "\n";
        text += std::string("    after ") + (h.earlier_write ? "a write" : "a read") + " by " +
                who(et, eb) + at(h.earlier.pc) + "\n";
        text += blocks ? "    the blocks of a launch are not ordered"
                       : "    with no __syncthreads() between them (warp shuffles and mma do not "
                         "order memory)";
    }
    std::snprintf(f.message, sizeof f.message, "%s", text.c_str());
}

}  // namespace emu
