"""Which kfuncs a BPF object really calls on a given kernel.

Every kfunc in vmlinux.h is declared `__weak __ksym`, so weakness says nothing about
whether the object can do without it. What matters is whether a call is reachable
once libbpf has resolved the externs: an absent weak ksym becomes address 0 and its
call is poisoned, and the verifier rejects the program only if it reaches that call.
The guard `if (bpf_ksym_exists(k))` compiles to

    rX = k ll        ; ld_imm64 with an R_BPF_64_64 relocation on k
    if rX == 0 goto  ; taken exactly when k is absent

This module walks each function's control flow the way the verifier prunes it:
registers loaded with a ksym's address are known to be zero or non-zero (from the
kernel's BTF), conditional jumps on them take one branch, everything else takes
both. A kfunc call (BPF_PSEUDO_KFUNC_CALL) that is reachable to an absent kfunc is
what a kernel must provide. (In the unlinked object a kfunc call is a `call` whose
relocation names an extern ksym; libbpf marks it BPF_PSEUDO_KFUNC_CALL when it loads.)
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Iterable

from elftools.elf.elffile import ELFFile

SHF_EXECINSTR = 0x4

BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_JMP32, BPF_ALU64 = range(8)
BPF_JA, BPF_JEQ, BPF_JNE, BPF_CALL, BPF_EXIT = 0x00, 0x10, 0x50, 0x80, 0x90
BPF_X = 0x08
BPF_MOV = 0xB0
BPF_ATOMIC = 0xC0
BPF_FETCH = 0x01

_INSN = struct.Struct("<BBhi")
CALLER_SAVED = range(0, 6)      # r0-r5 are clobbered by every call


@dataclass(frozen=True)
class KfuncCall:
    kfunc: str      # the ksym as the object names it (with any ___flavour)
    function: str   # the BPF function the call is in
    section: str


def _relocations(elf: ELFFile, section_index: int) -> dict[int, str]:
    """Instruction index -> symbol name for the relocations against one section."""
    out: dict[int, str] = {}
    for rel_sec in elf.iter_sections():
        if rel_sec["sh_type"] != "SHT_REL" or rel_sec["sh_info"] != section_index:
            continue
        symtab = elf.get_section(rel_sec["sh_link"])
        for rel in rel_sec.iter_relocations():
            sym = symtab.get_symbol(rel["r_info_sym"])
            if sym is not None and sym.name:
                out[rel["r_offset"] // 8] = sym.name
    return out


def _walk(insns: list[tuple[int, int, int, int]], relocs: dict[int, str], entry: int,
          present: Callable[[str], bool], ksyms: frozenset[str],
          seen: set[tuple[int, frozenset]]) -> Iterable[tuple[int, str]]:
    """(instruction index, kfunc) of each kfunc call reachable from `entry` and not
    already reached from a (pc, known registers) state in `seen`."""
    n = len(insns)
    work: list[tuple[int, frozenset]] = [(entry, frozenset())]
    while work:
        pc, known = work.pop()
        while 0 <= pc < n:
            key = (pc, known)
            if key in seen:
                break
            seen.add(key)
            op, regs, off, imm = insns[pc]
            dst, src = regs & 0x0F, regs >> 4
            cls = op & 0x07
            state = dict(known)
            if op == 0x18:                                  # ld_imm64: two slots
                sym = relocs.get(pc)
                state.pop(dst, None)
                if sym in ksyms:
                    state[dst] = present(sym)
                pc, known = pc + 2, frozenset(state.items())
                continue
            if cls in (BPF_JMP, BPF_JMP32):
                code = op & 0xF0
                if code == BPF_EXIT and cls == BPF_JMP:
                    break
                if code == BPF_CALL and cls == BPF_JMP:
                    sym = relocs.get(pc)
                    if sym in ksyms:
                        yield pc, sym
                    for r in CALLER_SAVED:
                        state.pop(r, None)
                    pc, known = pc + 1, frozenset(state.items())
                    continue
                if code == BPF_JA:
                    pc += 1 + (imm if cls == BPF_JMP32 else off)
                    continue
                taken, fall = pc + 1 + off, pc + 1
                if code in (BPF_JEQ, BPF_JNE) and not op & BPF_X and imm == 0 \
                        and dst in state:
                    is_zero = not state[dst]
                    pc = taken if is_zero == (code == BPF_JEQ) else fall
                    continue
                work.append((taken, known))
                pc = fall
                continue
            if cls in (BPF_ALU, BPF_ALU64, BPF_LDX, BPF_LD):
                if cls == BPF_ALU64 and op == (BPF_ALU64 | BPF_MOV | BPF_X) and src in state:
                    state[dst] = state[src]
                else:
                    state.pop(dst, None)
            elif cls == BPF_STX and op & 0xE0 == BPF_ATOMIC and imm & BPF_FETCH:
                state.pop(src, None)
                state.pop(0, None)                          # cmpxchg writes r0
            pc, known = pc + 1, frozenset(state.items())


def missing_calls(elf: ELFFile, ksyms: Iterable[str],
                  present: Callable[[str], bool]) -> list[KfuncCall]:
    """The calls the verifier would reach to kfuncs the kernel lacks.

    `ksyms` are the object's extern ksym names; `present(name)` says whether the
    kernel has one. Only functions (STT_FUNC symbols of executable sections:
    programs, subprograms, callbacks) that contain a call to an absent ksym are
    walked, each from its own entry: the verifier checks every function.
    """
    ksyms = frozenset(ksyms)
    absent = frozenset(k for k in ksyms if not present(k))
    if not absent:
        return []
    symtab = elf.get_section_by_name(".symtab")
    funcs: dict[int, list[tuple[int, str]]] = {}
    for sym in symtab.iter_symbols():
        if sym["st_info"]["type"] == "STT_FUNC" and isinstance(sym["st_shndx"], int):
            funcs.setdefault(sym["st_shndx"], []).append((sym["st_value"] // 8, sym.name))
    out: set[KfuncCall] = set()
    for index, entries in funcs.items():
        sec = elf.get_section(index)
        if not sec["sh_flags"] & SHF_EXECINSTR or sec["sh_type"] != "SHT_PROGBITS":
            continue
        relocs = _relocations(elf, index)
        suspects = [pc for pc, sym in relocs.items() if sym in absent]
        if not suspects:
            continue
        data = sec.data()
        insns = list(_INSN.iter_unpack(data[:len(data) - len(data) % 8]))
        starts = sorted(entries)
        owner = lambda pc: max((s for s in starts if s[0] <= pc), default=starts[0])
        seen: set[tuple[int, frozenset]] = set()
        for entry, name in sorted({owner(pc) for pc in suspects}):
            for pc, kfunc in _walk(insns, relocs, entry, present, ksyms, seen):
                if kfunc in absent:
                    out.add(KfuncCall(kfunc, owner(pc)[1], sec.name))
    return sorted(out, key=lambda c: (c.kfunc, c.section, c.function))
