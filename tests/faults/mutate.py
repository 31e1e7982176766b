"""Mutations of a BPF object, described as plain data so hypothesis (on the host) and a
seeded random generator (in the guest, where hypothesis is not installed) share them.

A mutation is a tuple: ("flip", offset, xor), ("truncate", length),
("shdr", index, field, value), ("ehdr", field, value), ("btf_hdr", field, value),
("btf_word", word_index, value), ("btfext_hdr", field, value),
("section_flip", section_name, offset_in_section, xor).
apply() performs a list of them on the bytes of an object; offsets that fall
outside the (possibly already truncated) data are clamped so every mutation
means something.
"""
from __future__ import annotations

import io
import random
import struct
from dataclasses import dataclass

from elftools.elf.elffile import ELFFile

# ELF64 section header: name, type, flags, addr, offset, size, link, info, addralign, entsize
SHDR_FIELDS = {"sh_name": (0, "<I"), "sh_type": (4, "<I"), "sh_flags": (8, "<Q"),
               "sh_offset": (24, "<Q"), "sh_size": (32, "<Q"), "sh_link": (40, "<I"),
               "sh_info": (44, "<I"), "sh_entsize": (56, "<Q")}
EHDR_FIELDS = {"e_type": (16, "<H"), "e_machine": (18, "<H"), "e_shoff": (40, "<Q"),
               "e_ehsize": (52, "<H"), "e_shentsize": (58, "<H"), "e_shnum": (60, "<H"),
               "e_shstrndx": (62, "<H"), "ei_class": (4, "<B"), "ei_data": (5, "<B")}
# struct btf_header: magic u16, version u8, flags u8, hdr_len, type_off, type_len,
# str_off, str_len (u32 each)
BTF_HDR_FIELDS = {"magic": (0, "<H"), "version": (2, "<B"), "flags": (3, "<B"),
                  "hdr_len": (4, "<I"), "type_off": (8, "<I"), "type_len": (12, "<I"),
                  "str_off": (16, "<I"), "str_len": (20, "<I")}
# struct btf_ext_header: magic, version, flags, hdr_len, func_info_off/len,
# line_info_off/len, core_relo_off/len
BTFEXT_HDR_FIELDS = {"magic": (0, "<H"), "version": (2, "<B"), "flags": (3, "<B"),
                     "hdr_len": (4, "<I"), "func_info_off": (8, "<I"),
                     "func_info_len": (12, "<I"), "line_info_off": (16, "<I"),
                     "line_info_len": (20, "<I"), "core_relo_off": (24, "<I"),
                     "core_relo_len": (28, "<I")}
# The sections whose bytes the gate reads (flips elsewhere, e.g. DWARF, are mostly no-ops).
GATE_SECTIONS = (".BTF", ".BTF.ext", ".symtab", ".strtab", ".struct_ops.link",
                 ".rel.struct_ops.link", ".maps", ".rodata", "license")

INTERESTING = (0, 1, 2, 3, 7, 8, 0x10, 0x3f, 0x40, 0x7f, 0x80, 0xff, 0x100, 0xfff, 0xffff,
               0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 1 << 32, 1 << 62,
               (1 << 63) - 1, 1 << 63, (1 << 64) - 1)
# BTF info words: kind in bits 24..28, kind_flag bit 31, vlen in bits 0..15.
BTF_INFO_WORDS = tuple((kind << 24) | vlen for kind in range(0, 32, 1)
                       for vlen in (0, 1, 0xffff)) + (0x80000000 | (4 << 24) | 3,)


@dataclass(frozen=True)
class Layout:
    """Where things are in the original object (offsets the mutations aim at)."""
    size: int
    shoff: int
    shnum: int
    sections: dict          # name -> (offset, size)
    btf: tuple[int, int]    # (offset, size) of .BTF
    btf_types: tuple[int, int]  # (file offset, length) of the BTF type section

    @classmethod
    def of(cls, data: bytes) -> Layout:
        elf = ELFFile(io.BytesIO(data))
        secs = {s.name: (s["sh_offset"], s["sh_size"]) for s in elf.iter_sections()}
        boff, bsize = secs[".BTF"]
        hdr_len, type_off, type_len = struct.unpack_from("<III", data, boff + 4)
        return cls(size=len(data), shoff=elf.header["e_shoff"], shnum=elf.header["e_shnum"],
                   sections=secs, btf=(boff, bsize),
                   btf_types=(boff + hdr_len + type_off, type_len))


def _put(buf: bytearray, off: int, fmt: str, value: int) -> None:
    width = struct.calcsize(fmt)
    if off < 0 or off + width > len(buf):
        return
    value &= (1 << (8 * width)) - 1
    struct.pack_into(fmt, buf, off, value)


def apply(data: bytes, mutations, layout: Layout | None = None) -> bytes:
    layout = layout or Layout.of(data)
    buf = bytearray(data)
    for m in mutations:
        kind = m[0]
        if kind == "flip":
            _, off, xor = m
            if buf:
                buf[off % len(buf)] ^= (xor or 1)
        elif kind == "section_flip":
            _, name, off, xor = m
            soff, ssize = layout.sections[name]
            if ssize and buf:
                buf[(soff + off % ssize) % len(buf)] ^= (xor or 1)
        elif kind == "truncate":
            del buf[m[1]:]
        elif kind == "shdr":
            _, index, fld, value = m
            rel, fmt = SHDR_FIELDS[fld]
            _put(buf, layout.shoff + (index % layout.shnum) * 64 + rel, fmt, value)
        elif kind == "ehdr":
            _, fld, value = m
            rel, fmt = EHDR_FIELDS[fld]
            _put(buf, rel, fmt, value)
        elif kind == "btf_hdr":
            _, fld, value = m
            rel, fmt = BTF_HDR_FIELDS[fld]
            _put(buf, layout.btf[0] + rel, fmt, value)
        elif kind == "btfext_hdr":
            _, fld, value = m
            rel, fmt = BTFEXT_HDR_FIELDS[fld]
            _put(buf, layout.sections[".BTF.ext"][0] + rel, fmt, value)
        elif kind == "btf_word":
            _, word, value = m
            toff, tlen = layout.btf_types
            nwords = max(1, tlen // 4)
            _put(buf, toff + (word % nwords) * 4, "<I", value)
        else:
            raise ValueError(f"unknown mutation {kind!r}")
    return bytes(buf)


def random_mutations(rng: random.Random, layout: Layout) -> list[tuple]:
    """1-3 mutations drawn like the hypothesis strategy (for the guest)."""
    out = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("flip", "section_flip", "truncate", "shdr", "ehdr", "btf_hdr",
                           "btf_word", "btfext_hdr"))
        value = rng.choice(INTERESTING) if rng.random() < 0.7 else rng.getrandbits(64)
        if kind == "flip":
            out.append(("flip", rng.randrange(layout.size), rng.randint(1, 255)))
        elif kind == "section_flip":
            out.append(("section_flip", rng.choice(GATE_SECTIONS), rng.getrandbits(32),
                        rng.randint(1, 255)))
        elif kind == "truncate":
            out.append(("truncate", rng.randrange(layout.size)))
        elif kind == "shdr":
            out.append(("shdr", rng.randrange(layout.shnum), rng.choice(list(SHDR_FIELDS)),
                        value))
        elif kind == "ehdr":
            out.append(("ehdr", rng.choice(list(EHDR_FIELDS)), value))
        elif kind == "btf_hdr":
            out.append(("btf_hdr", rng.choice(list(BTF_HDR_FIELDS)), value))
        elif kind == "btfext_hdr":
            out.append(("btfext_hdr", rng.choice(list(BTFEXT_HDR_FIELDS)), value))
        else:
            word = rng.randrange(layout.btf_types[1] // 4)
            out.append(("btf_word", word, rng.choice(BTF_INFO_WORDS) if rng.random() < 0.5
                        else value))
    return out
