//! Pickle opcodes (names as in CPython's `pickletools`).

/// `(` push a mark.
pub(crate) const MARK: u8 = b'(';
/// `.` end of pickle.
pub(crate) const STOP: u8 = b'.';
/// `0` discard the top item.
pub(crate) const POP: u8 = b'0';
/// `1` discard everything down to the topmost mark.
pub(crate) const POP_MARK: u8 = b'1';
/// `2` duplicate the top item.
pub(crate) const DUP: u8 = b'2';
/// `F` float as decimal text.
pub(crate) const FLOAT: u8 = b'F';
/// `I` integer as decimal text (`00`/`01` are False/True).
pub(crate) const INT: u8 = b'I';
/// `J` 4-byte signed integer.
pub(crate) const BININT: u8 = b'J';
/// `K` 1-byte unsigned integer.
pub(crate) const BININT1: u8 = b'K';
/// `L` long as decimal text.
pub(crate) const LONG: u8 = b'L';
/// `M` 2-byte unsigned integer.
pub(crate) const BININT2: u8 = b'M';
/// `N` None.
pub(crate) const NONE: u8 = b'N';
/// `P` persistent id as text.
pub(crate) const PERSID: u8 = b'P';
/// `Q` persistent id from the stack.
pub(crate) const BINPERSID: u8 = b'Q';
/// `R` call a callable with an argument tuple.
pub(crate) const REDUCE: u8 = b'R';
/// `S` quoted string.
pub(crate) const STRING: u8 = b'S';
/// `T` string with 4-byte length.
pub(crate) const BINSTRING: u8 = b'T';
/// `U` string with 1-byte length.
pub(crate) const SHORT_BINSTRING: u8 = b'U';
/// `V` raw-unicode-escaped text.
pub(crate) const UNICODE: u8 = b'V';
/// `X` UTF-8 with 4-byte length.
pub(crate) const BINUNICODE: u8 = b'X';
/// `a` append to a list.
pub(crate) const APPEND: u8 = b'a';
/// `b` set state (`__setstate__`).
pub(crate) const BUILD: u8 = b'b';
/// `c` global from two text lines.
pub(crate) const GLOBAL: u8 = b'c';
/// `d` dict from the items since the mark.
pub(crate) const DICT: u8 = b'd';
/// `}` empty dict.
pub(crate) const EMPTY_DICT: u8 = b'}';
/// `e` extend a list with the items since the mark.
pub(crate) const APPENDS: u8 = b'e';
/// `g` memo get, decimal index.
pub(crate) const GET: u8 = b'g';
/// `h` memo get, 1-byte index.
pub(crate) const BINGET: u8 = b'h';
/// `i` instantiate a class named by two text lines.
pub(crate) const INST: u8 = b'i';
/// `j` memo get, 4-byte index.
pub(crate) const LONG_BINGET: u8 = b'j';
/// `l` list from the items since the mark.
pub(crate) const LIST: u8 = b'l';
/// `]` empty list.
pub(crate) const EMPTY_LIST: u8 = b']';
/// `o` instantiate the class at the mark.
pub(crate) const OBJ: u8 = b'o';
/// `p` memo put, decimal index.
pub(crate) const PUT: u8 = b'p';
/// `q` memo put, 1-byte index.
pub(crate) const BINPUT: u8 = b'q';
/// `r` memo put, 4-byte index.
pub(crate) const LONG_BINPUT: u8 = b'r';
/// `s` set one dict item.
pub(crate) const SETITEM: u8 = b's';
/// `t` tuple from the items since the mark.
pub(crate) const TUPLE: u8 = b't';
/// `)` empty tuple.
pub(crate) const EMPTY_TUPLE: u8 = b')';
/// `u` set dict items since the mark.
pub(crate) const SETITEMS: u8 = b'u';
/// `G` big-endian 8-byte float.
pub(crate) const BINFLOAT: u8 = b'G';

/// Protocol marker.
pub(crate) const PROTO: u8 = 0x80;
/// `cls.__new__(cls, *args)`.
pub(crate) const NEWOBJ: u8 = 0x81;
/// Extension registry lookup, 1-byte code (refused).
pub(crate) const EXT1: u8 = 0x82;
/// Extension registry lookup, 2-byte code (refused).
pub(crate) const EXT2: u8 = 0x83;
/// Extension registry lookup, 4-byte code (refused).
pub(crate) const EXT4: u8 = 0x84;
/// 1-tuple.
pub(crate) const TUPLE1: u8 = 0x85;
/// 2-tuple.
pub(crate) const TUPLE2: u8 = 0x86;
/// 3-tuple.
pub(crate) const TUPLE3: u8 = 0x87;
/// True.
pub(crate) const NEWTRUE: u8 = 0x88;
/// False.
pub(crate) const NEWFALSE: u8 = 0x89;
/// Integer, 1-byte length, little-endian two's complement.
pub(crate) const LONG1: u8 = 0x8a;
/// Integer, 4-byte length, little-endian two's complement.
pub(crate) const LONG4: u8 = 0x8b;
/// Bytes with 4-byte length.
pub(crate) const BINBYTES: u8 = b'B';
/// Bytes with 1-byte length.
pub(crate) const SHORT_BINBYTES: u8 = b'C';
/// UTF-8 with 1-byte length.
pub(crate) const SHORT_BINUNICODE: u8 = 0x8c;
/// UTF-8 with 8-byte length.
pub(crate) const BINUNICODE8: u8 = 0x8d;
/// Bytes with 8-byte length.
pub(crate) const BINBYTES8: u8 = 0x8e;
/// Empty set.
pub(crate) const EMPTY_SET: u8 = 0x8f;
/// Add the items since the mark to a set.
pub(crate) const ADDITEMS: u8 = 0x90;
/// Frozenset from the items since the mark.
pub(crate) const FROZENSET: u8 = 0x91;
/// `cls.__new__(cls, *args, **kwargs)`.
pub(crate) const NEWOBJ_EX: u8 = 0x92;
/// Global from two strings on the stack.
pub(crate) const STACK_GLOBAL: u8 = 0x93;
/// Memo put at the next index.
pub(crate) const MEMOIZE: u8 = 0x94;
/// Frame length (framing is advisory; the machine reads through frames).
pub(crate) const FRAME: u8 = 0x95;
/// Bytearray with 8-byte length.
pub(crate) const BYTEARRAY8: u8 = 0x96;
/// Out-of-band buffer (refused).
pub(crate) const NEXT_BUFFER: u8 = 0x97;
/// Make the top buffer read-only (refused).
pub(crate) const READONLY_BUFFER: u8 = 0x98;

/// Highest pickle protocol the machine reads.
pub(crate) const HIGHEST_PROTOCOL: u8 = 5;
