#!/usr/bin/env python3
"""Cross-client routing vectors for shard.StableHash.

Writes, for each key, the CRC32 that Python's zlib.crc32 computes over the
key's UTF-8 bytes and the server index key % n for n = 1..7, which is what
the Python, TypeScript and upstream Go dflockd clients route by.

    python3 shard/testdata/gen_crc32_vectors.py > shard/testdata/crc32_vectors.tsv
"""
import random
import zlib

rng = random.Random(20261125)
ascii_chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@#"
non_ascii = "äöüßéèçñøåłżščřğışœæ€£¥§µ¿¡αβγδλπΩжшщюя中文日本語한국어עבריתالعربية"
emoji = "🔒🔑🚀🎉😀🧪🌍💾🛠️⏱️"

keys = ["my-key", "a", "foo", "lock-1", "🔒", "worker-pool"]
for i in range(420):
    keys.append("".join(rng.choice(ascii_chars) for _ in range(rng.randint(1, 40))))
for i in range(200):
    keys.append(f"orders/{i}")
for i in range(150):
    keys.append("".join(rng.choice(ascii_chars + non_ascii) for _ in range(rng.randint(1, 30))))
for i in range(100):
    keys.append("".join(rng.choice(ascii_chars + emoji) for _ in range(rng.randint(1, 20))))
for i in range(100):
    # Long keys, up to the protocol's 256-byte line limit.
    k = "".join(rng.choice(ascii_chars + non_ascii) for _ in range(rng.randint(60, 120)))
    while len(k.encode()) > 256:
        k = k[:-1]
    keys.append(k)
for i in range(50):
    keys.append(f"tenant-{rng.randint(0, 10**9)}:job:{rng.randint(0, 10**6)}")

print("# key\tcrc32\tindex for n=1..7 servers")
print("# python3 shard/testdata/gen_crc32_vectors.py > shard/testdata/crc32_vectors.tsv")
seen = set()
for k in keys:
    if k in seen:
        continue
    seen.add(k)
    assert "\t" not in k and "\n" not in k and " " not in k and "\r" not in k
    c = zlib.crc32(k.encode("utf-8"))
    print(k, f"{c:08x}", *(str(c % n) for n in range(1, 8)), sep="\t")
