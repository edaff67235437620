"""SplitMix64 in Python integers (Vigna's splitmix64.c), for reproducing the extension's seeded
splits and shuffles in the reference checks."""


class SplitMix64:
    M = (1 << 64) - 1

    def __init__(self, seed):
        self.s = seed

    def u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & self.M
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self.M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self.M
        return z ^ (z >> 31)

    def f64(self):
        return (self.u64() >> 11) / float(1 << 53)

    def shuffle(self, v):
        for i in range(len(v) - 1, 0, -1):
            j = self.u64() % (i + 1)
            v[i], v[j] = v[j], v[i]
