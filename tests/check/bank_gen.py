#!/usr/bin/env python3
"""bank_gen.py -- writes a synthetic bank history (docs/checker.md, "The bank
model") from a simulated serializable bank, for timing `keel check --model
bank` on large inputs; the result must check `valid`.

Each op takes effect at one random moment between its invocation and its
completion; a transfer that would overdraw (or, 3% of the time, a refused
one) fails; 2% of transfer completions are reported as info whatever
happened. Deterministic for a given seed.

usage: bank_gen.py [SEED] [OPS] [ACCOUNTS] [PROCESSES] > history.jsonl
"""
import json
import random
import sys


def main():
    args = [int(a) for a in sys.argv[1:]]
    seed, ops, n_acct, n_proc = (args + [1, 200000, 10, 50][len(args):])[:4]
    rng = random.Random(seed)
    accounts = ["a%d" % i for i in range(n_acct)]
    bal = {a: 100000 for a in accounts}
    dump = lambda o: json.dumps(o, separators=(",", ":"))
    out = [dump({"type": "bank", "accounts": accounts,
                 "total": 100000 * n_acct, "initial": dict(bal)})]
    ledger = []
    open_ops = {}
    next_id = 0
    done = 0
    while done < ops:
        p = rng.randrange(n_proc)
        o = open_ops.get(p)
        if o is None:
            if rng.random() < 0.4:
                o = {"read": True}
                out.append(dump({"process": p, "type": "invoke", "f": "read"}))
            else:
                src, dst = rng.sample(accounts, 2)
                next_id += 1
                o = {"read": False, "value": {"from": src, "to": dst,
                                              "amount": rng.randint(1, 50),
                                              "id": "t%d" % next_id}}
                out.append(dump({"process": p, "type": "invoke",
                                 "f": "transfer", "value": o["value"]}))
            o["effect"] = False
            open_ops[p] = o
            continue
        if not o["effect"]:
            o["effect"] = True
            if o["read"]:
                o["snap"] = dict(bal)
            else:
                v = o["value"]
                o["applied"] = bal[v["from"]] >= v["amount"] and rng.random() < 0.97
                if o["applied"]:
                    bal[v["from"]] -= v["amount"]
                    bal[v["to"]] += v["amount"]
                    ledger.append(v["id"])
            continue
        del open_ops[p]
        done += 1
        if o["read"]:
            out.append(dump({"process": p, "type": "ok", "f": "read",
                             "value": o["snap"]}))
        else:
            t = "ok" if o["applied"] else "fail"
            if rng.random() < 0.02:
                t = "info"
            out.append(dump({"process": p, "type": t, "f": "transfer",
                             "value": o["value"]}))
    out.append(dump({"type": "final", "f": "ledger",
                     "value": "".join(i + "," for i in ledger)}))
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
