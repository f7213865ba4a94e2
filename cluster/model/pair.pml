/*
 * pair.pml: a Promela model of Tern's active/standby pair (issue 15), checked with spin by
 * cluster/model/check.sh (ctest label "model").
 *
 * What is modelled, and where it comes from:
 *   - the witness (cluster/witness.c, rules in cluster/cluster.h): {epoch, last holder, recorded
 *     in-sync standby, lease live}; ACQUIRE granted only when no lease is live and the asker is
 *     the last holder, the recorded in-sync standby, or nothing was ever granted; a grant sets
 *     standby = none and epoch + 1; RENEW answers OK (recording the standby it carries) or LOST;
 *     a lease ends on expiry or when the holder's connection closes.
 *   - two nodes (tools/ternd/ternd.c, cluster/lease.c, cluster/repl.c): roles standby / active /
 *     fenced; a journal of at most MAXJ records, each tagged with the epoch it was written in
 *     (its LSN is its position + 1), with a durable prefix; the epoch history (DIR/pair-epochs:
 *     the first LSN of each epoch); the lease client's one outstanding request and its reply;
 *     the active's gate (repl.c gate(): nothing while the lease is not valid; up to the
 *     standby's ACK while it is recorded or being recorded in sync; everything durable here
 *     while alone), maybe_in_sync(), check_standby(), recorded_sync(), recorded_alone().
 *   - the replication link: HELLO/WELCOME (tn_repl__start_for(), the reset), RECORDS in FIFO
 *     order (a channel), ACKs of what is durable on the standby.
 *   - faults, at any time: a node crashes and restarts as a standby (it loses its volatile state
 *     and what its journal had not synced: power loss), its clock runs past its lease end, the
 *     replication link is cut, a node's witness connection is cut. A freeze is any stretch of
 *     time in which a node takes no step: spin explores every interleaving, so every freeze of
 *     every length is covered; a node's lease end is a clock event, not a step of the node, so
 *     it can pass while the node is frozen, and the node sees it at its next step (gate()
 *     reads uv_hrtime).
 *
 * Lease timing, abstracted (the argument of README "Active/standby pair", point 1, and
 * lease.c): a node counts its lease from when it SENT the request answered GRANT/OK, minus a
 * margin; the witness counts it from when it RECEIVED it. So the node's lease always ends,
 * by its own clock, before the witness' lease can end by expiry. The model keeps one ghost
 * bit per node, lv[n] ("this node's lease is valid by its own clock"), set when the witness
 * grants (the node's lease began earlier, at its send time) and cleared by a clock event at
 * any time; and the WITNESS MAY EXPIRE A LEASE ONLY ONCE ITS HOLDER'S lv IS CLEAR (local
 * expiry happens-before witness expiry). Renewals are not counted: a lease that has not ended
 * may always still be renewed, which is what "lv may be cleared at any time, or never" covers.
 * The other way a lease ends, the holder's witness connection closing, happens in the model
 * only when the holder has stopped (crash, its own conn_drop after its lease ended, conn_fail
 * which drops the lease in the same callback), as cluster.h says. A witness restart keeps the
 * lease live for one more lease_ms (witness.c), which is a live lease expiring later: covered.
 *
 * A "confirm" is the moment gate() lets a record through (what makes it safe is decided
 * there; the PUBACK may leave later). Only records written in the node's own epoch are
 * confirmed by it: older ones recovered from the journal were never confirmed to anyone by it.
 *
 * Properties (assertions; spin -a + pan -DSAFETY checks every reachable state):
 *   P1 once a node is granted epoch e, no node confirms anything at an epoch < e afterwards:
 *      at every confirm, the confirming node's epoch is the witness' current epoch.
 *   P2 every confirmed message is in the journal of a node at the moment it becomes active,
 *      at the same LSN with the same epoch (and so also never two different confirmed
 *      messages at one LSN).
 *   Reachability (REACH_*: each is an assert(!goal) that spin must find violated):
 *      failover with confirmed messages, confirms by both nodes, going alone and pairing again,
 *      a standby's journal reset.
 *
 * Mutations (MUT_*, each expected to be caught):
 *   MUT_ALONE_EARLY   check_standby() confirms alone at once, before the witness records "none"
 *   MUT_INSYNC_LATE   maybe_in_sync() keeps confirming alone until the witness has recorded the
 *                     standby (gates on ACKs only after)
 *   MUT_GRANT_BEHIND  the witness grants to any asker once the lease is free (no BEHIND)
 *   MUT_KEEP_SB       a grant keeps the recorded in-sync standby
 *   MUT_NO_LEASE_GATE gate() does not look at the lease
 *   MUT_NO_RESET      start_for() does not check where the standby's epoch ends (no reset)
 *   MUT_EARLY_EXPIRY  the witness may end a lease while its holder still counts it valid
 *
 * Two points where the model is NOT the C code of today (repl.c), because the code as it is
 * loses a confirmed message (spin's counterexamples are in check.sh's output with ASIS_*):
 *   - on_hello() answers a HELLO whenever its mode is R_ACTIVE, without checking the lease: a
 *     node whose lease has ended but that has not fenced yet (frozen, or the expiry timer not
 *     run yet) may WELCOME with reset a standby that holds newer-epoch confirmed records, which
 *     drops them. The model answers only while the lease is valid (ASIS_HELLO_NO_LEASE: as the
 *     code does). Another fix with the same effect: the standby refuses a WELCOME whose epoch
 *     is older than the newest epoch in its own history.
 *   - on_hello() sets acked = start - 1, the standby's LAST LSN (tn_store_last_lsn: appended,
 *     maybe not yet durable), so a standby that reconnects can be recorded in sync with records
 *     it may still lose. The model takes the standby's durable end (ASIS_HELLO_LAST_LSN: as the
 *     code does); HELLO would carry tn_store_durable_lsn as well, or the standby would send
 *     HELLO only once its journal is durable.
 */

#define NN 2           /* nodes 0 and 1 */
#define NONE 2         /* no node */
#ifndef MAXJ
#define MAXJ 2         /* journal records per node */
#endif
#ifndef MAXE
#define MAXE 3         /* grants (epochs 1..MAXE) */
#endif
#define HE (MAXE + 1)  /* history slots per node: epochs 1..MAXE */

/* roles (repl.c modes; a node that crashed restarts as a standby at once) */
#define SB 0
#define ACT 1
#define FEN 2
/* the active's standby state (repl.c S_*) */
#define ALONE 0
#define PAIRED 1
#define GOING 2
/* lease requests and replies */
#define ACQ 1
#define RENEW 2
#define GRANT 1
#define NO 2           /* BUSY or BEHIND */
#define OK 3
#define LOST 4
/* a waiter of tn_lease_set_standby */
#define W_SYNC 1
#define W_ALONE 2

/* ---- the witness ---- */
byte w_ep;             /* epoch (0: never granted) */
byte w_hold = NONE;    /* last holder */
byte w_sb = NONE;      /* recorded in-sync standby */
bool w_live;           /* a lease is live */

/* ---- the nodes ---- */
byte role[NN];
byte ep[NN];           /* the epoch held (or last held) */
bool lv[NN];           /* ghost: the lease is valid by this node's clock */
byte jl[NN];           /* journal: records written (last LSN) */
byte jd[NN];           /* journal: records durable (a crash keeps only these) */
byte je[NN * MAXJ];    /* epoch each record was written in (0: none) */
byte hf[NN * HE];      /* epoch history: first LSN of each epoch (0: not in it) */
byte cf[NN];           /* active: records up to here were looked at for confirming */
byte sy[NN];           /* active: ALONE / PAIRED / GOING */
bool rec[NN];          /* active: a set_standby is waiting for the witness (r->recording) */
byte acked[NN];        /* active: the standby's ACK */
byte cur[NN];          /* active: next record to ship (0-based) */
byte sbv[NN];           /* lease: the standby value RENEWs carry (NONE: "-") */
byte wt[NN];           /* lease: the set_standby waiter (0, W_SYNC, W_ALONE) */
byte rq[NN];           /* lease: request outstanding (0, ACQ, RENEW) */
byte rqv[NN];          /* lease: the standby value that RENEW carried */
bool rqc[NN];          /* lease: that RENEW carried the waiter's value */
byte rp[NN];           /* lease: reply waiting to be read */

/* ---- the replication link (one at most: lsb is its standby end) ---- */
byte lup;              /* 0: none; 1: up; 2: the active's end closed, the standby drains */
byte lsb = NONE;
chan recs = [MAXJ] of { byte, byte };  /* RECORDS in flight: LSN, epoch */
byte ackv;             /* the newest ACK the standby sent on this link */

/* ---- what was confirmed: the epoch of the confirmed message at each LSN (0: none) ---- */
byte conf[MAXJ];
bool confby[NN];       /* ghost, for the reachability goals: this node confirmed something */
#ifdef REACH_REPAIR
bool repaired;         /* ghost: an active went alone and later paired again */
bool wasalone[NN];
#define GHOST(x) x
#else
#define GHOST(x) skip
#endif

#define JE(n, k) je[(n) * MAXJ + (k)]
#define HF(n, e) hf[(n) * HE + (e)]
#define OTHER(n) (1 - (n))
#ifndef MUT_NO_LEASE_GATE
#define LEASE_GATE(n) lv[n]
#else
#define LEASE_GATE(n) 1
#endif
#ifndef ASIS_HELLO_NO_LEASE
#define HELLO_LEASE(a) lv[a]
#else
#define HELLO_LEASE(a) 1
#endif

inline flush_link() {
    do
    :: recs ? _, _
    :: empty(recs) -> break
    od;
    lup = 0;
    lsb = NONE;
    ackv = 0
}

/* lose(): fence (tn_repl_fence: mode FENCED, the standby's link closed), fail the waiter. */
inline fence(n) {
    role[n] = FEN;
    if
    :: lup == 1 && lsb == OTHER(n) -> lup = 2; ackv = 0
    :: else -> skip
    fi;
    wt[n] = 0;
    rec[n] = 0
}

/* The node closes its witness connection: the witness ends the lease at once if it is the
 * holder's (the node has already stopped confirming: its callers fence first or are not
 * active). The reply in flight is lost with it. */
inline witness_conn_closed(n) {
    rq[n] = 0;
    rp[n] = 0;
    if
    :: w_live && w_hold == n -> w_live = 0
    :: else -> skip
    fi
}

/* The witness answers one request of node n (witness.c tn_witness_handle). */
inline handle(n) {
    if
    :: rq[n] == ACQ ->
        if
        :: w_live -> rp[n] = NO                                    /* BUSY */
#ifndef MUT_GRANT_BEHIND
        :: !w_live && w_hold != NONE && w_hold != n && w_sb != n -> rp[n] = NO  /* BEHIND */
#endif
        :: else ->
            if
            :: w_ep >= MAXE -> rp[n] = NO                          /* the model's bound */
            :: else ->
                w_ep++;
                w_hold = n;
#ifndef MUT_KEEP_SB
                w_sb = NONE;
#endif
                w_live = 1;
                lv[n] = 1;          /* its own count began when it sent the request */
                ep[n] = w_ep;       /* GRANT <epoch>: kept by the lease client */
                rp[n] = GRANT
            fi
        fi
    :: rq[n] == RENEW ->
        if
        :: w_live && ep[n] == w_ep && w_hold == n -> w_sb = rqv[n]; rp[n] = OK
        :: else -> rp[n] = LOST
        fi
    fi;
    rq[n] = 0
}

proctype Witness() {
end:
    do
    :: d_step { rq[0] != 0 && rp[0] == 0 -> handle(0) }
    :: d_step { rq[1] != 0 && rp[1] == 0 -> handle(1) }
#ifndef MUT_EARLY_EXPIRY
    /* the lease ends by time only once its holder's own count has ended (see the top) */
    :: d_step { w_live && !lv[w_hold] -> w_live = 0 }
#else
    :: d_step { w_live -> w_live = 0 }
#endif
    od
}

/* tn_repl__start_for(): where the standby s's journal starts again, following the active a.
 * Sets st (start LSN) and rs (reset). */
inline start_for(a, s) {
    rs = 0;
    if
    :: jl[s] == 0 -> st = 1
    :: else ->
        /* the epoch of the standby's last record: the newest one in its history with first
         * LSN <= its last LSN */
        e = MAXE;
        do
        :: e > 0 && (HF(s, e) == 0 || HF(s, e) > jl[s]) -> e--
        :: else -> break
        od;
        ok = 0;
        if
        :: e > 0 && HF(a, e) == HF(s, e) && jl[s] <= jl[a] ->
            /* where that epoch ends on the active: before its next epoch's first LSN */
            k = e + 1;
            do
            :: k <= MAXE && HF(a, k) == 0 -> k++
            :: else -> break
            od;
#ifndef MUT_NO_RESET
            ok = (k > MAXE || jl[s] <= HF(a, k) - 1)
#else
            ok = 1
#endif
        :: else -> skip
        fi;
        if
        :: ok -> st = jl[s] + 1
        :: else -> rs = 1; st = 1   /* copy anew from the active's oldest record */
        fi
    fi
}

/* The node n becomes active (ternd on_granted, tn_repl_active_start). */
inline become_active(n) {
    /* tn_repl_standby_stop: stop following, close the journal (everything received synced) */
    if
    :: lup != 0 && lsb == n -> flush_link()
    :: else -> skip
    fi;
    jd[n] = jl[n];
    /* P2: every confirmed message is in its journal */
    k = 0;
    do
    :: k < MAXJ ->
        assert(conf[k] == 0 || (k < jl[n] && JE(n, k) == conf[k]));
        k++
    :: else -> break
    od;
#ifdef REACH_FAILOVER
    /* goal: a node becomes active holding messages the other node confirmed */
    assert(!(confby[OTHER(n)] && conf[0] != 0));
#endif
    k = 0;
    role[n] = ACT;
    sy[n] = ALONE;      /* a grant records no standby: it has to catch up first */
    rec[n] = 0;
    acked[n] = 0;
    cur[n] = 0;
    cf[n] = jl[n];
    sbv[n] = NONE;
    wt[n] = 0;
    GHOST(wasalone[n] = 0);
    HF(n, ep[n]) = jl[n] + 1
}

/* The node n crashes and restarts as a standby. */
inline crash(n) {
    role[n] = SB;
    k = jd[n];
    do
    :: k < MAXJ -> JE(n, k) = 0; k++
    :: else -> break
    od;
    k = 0;
    jl[n] = jd[n];
    if
    :: lup != 0 && lsb == n -> flush_link()
    :: lup == 1 && lsb == OTHER(n) -> lup = 2; ackv = 0
    :: else -> skip
    fi;
    lv[n] = 0;
    ep[n] = 0;
    cf[n] = 0;
    sy[n] = ALONE;
    rec[n] = 0;
    acked[n] = 0;
    cur[n] = 0;
    sbv[n] = NONE;
    wt[n] = 0;
    rqv[n] = 0;
    rqc[n] = 0;
    GHOST(wasalone[n] = 0);
    witness_conn_closed(n)
}

proctype Node(byte n) {
    byte k, e, st;
    bool rs, ok;
end:
    do
    /* ---- any role ---- */
    :: d_step { jd[n] < jl[n] -> jd[n] = jl[n] }                  /* the journal syncs */
    :: d_step { crash(n) }
    :: d_step { lv[n] -> lv[n] = 0 }                              /* the clock passes the lease end */
    :: d_step { rq[n] != 0 || rp[n] != 0 || role[n] == ACT ->     /* witness connection cut */
            if
            :: role[n] == ACT -> fence(n)                         /* conn_fail: drop, lose */
            :: else -> skip
            fi;
            witness_conn_closed(n) }

    /* ---- standby ---- */
    :: d_step { role[n] == SB && rq[n] == 0 && rp[n] == 0 -> rq[n] = ACQ }
    :: d_step { role[n] == SB && rp[n] == NO -> rp[n] = 0 }
    :: d_step { role[n] == SB && rp[n] == GRANT ->
            rp[n] = 0;
            if
            :: lv[n] -> become_active(n)
            :: else -> witness_conn_closed(n)      /* LEASE-LATE: hand it back */
            fi }
    /* connect: HELLO (its last LSN, its history) and WELCOME, to a peer in mode R_ACTIVE */
    :: d_step { role[n] == SB && lup == 0 && role[OTHER(n)] == ACT && HELLO_LEASE(OTHER(n)) ->
            start_for(OTHER(n), n);
            lup = 1;
            lsb = n;
            ackv = 0;
            acked[OTHER(n)] = st - 1;
#ifndef ASIS_HELLO_LAST_LSN
            if
            :: !rs && jd[n] < st - 1 -> acked[OTHER(n)] = jd[n]
            :: else -> skip
            fi;
#endif
            cur[OTHER(n)] = st - 1;
            if
            :: rs ->                            /* PAIR-RESET: drop the journal */
#ifdef REACH_RESET
                assert(!(jl[n] > 0 && conf[0] != 0));   /* goal: a reset after confirms */
#endif
                jl[n] = 0;
                jd[n] = 0;
                k = 0;
                do
                :: k < MAXJ -> JE(n, k) = 0; k++
                :: else -> break
                od
            :: else -> skip
            fi;
            k = 1;                              /* the history: the active's */
            do
            :: k <= MAXE -> HF(n, k) = HF(OTHER(n), k); k++
            :: else -> break
            od;
            k = 0; e = 0; st = 0; rs = 0; ok = 0 }
    :: d_step { lup != 0 && lsb == n && nempty(recs) ->           /* RECORDS */
            recs ? st, e;
            if
            :: st == jl[n] + 1 && jl[n] < MAXJ -> JE(n, jl[n]) = e; jl[n]++
            :: else -> flush_link()             /* a bad record: close */
            fi;
            st = 0; e = 0 }
    :: d_step { lup == 2 && lsb == n -> flush_link() }            /* sees the close */
    :: d_step { lup == 1 && lsb == n && jd[n] > ackv -> ackv = jd[n] }  /* ACK */

    /* ---- active (and fenced: its clients keep publishing, nothing is confirmed) ---- */
    :: d_step { (role[n] == ACT || role[n] == FEN) && jl[n] < MAXJ ->
            JE(n, jl[n]) = ep[n]; jl[n]++ }
    :: d_step { role[n] == ACT && rq[n] == 0 && rp[n] == 0 ->     /* RENEW (tick or kick) */
            rq[n] = RENEW; rqv[n] = sbv[n]; rqc[n] = (wt[n] != 0) }
    :: d_step { role[n] == ACT && rp[n] == OK ->
            rp[n] = 0;
            if
            :: !lv[n] -> fence(n); witness_conn_closed(n)         /* check_expiry */
            :: lv[n] && rqc[n] && wt[n] == W_SYNC ->               /* recorded_sync */
#ifdef MUT_INSYNC_LATE
                sy[n] = PAIRED;
#endif
                wt[n] = 0; rec[n] = 0
            :: lv[n] && rqc[n] && wt[n] == W_ALONE ->              /* recorded_alone */
                wt[n] = 0; rec[n] = 0; sy[n] = ALONE; GHOST(wasalone[n] = 1)
            :: else -> skip
            fi;
            rqc[n] = 0; rqv[n] = 0 }
    :: d_step { role[n] == ACT && rp[n] == LOST ->
            rp[n] = 0; rqc[n] = 0; rqv[n] = 0;
            if
            :: !lv[n] -> fence(n); witness_conn_closed(n)
            :: else -> fence(n)
            fi }
    :: d_step { role[n] == ACT && !lv[n] -> fence(n); witness_conn_closed(n) }  /* on_expiry */
    :: d_step { role[n] == ACT && lup == 1 && lsb == OTHER(n) && cur[n] < jl[n] && nfull(recs) ->
            recs ! cur[n] + 1, JE(n, cur[n]); cur[n]++ }          /* ship */
    :: d_step { role[n] == ACT && lup == 1 && lsb == OTHER(n) && ackv > acked[n] ->
            acked[n] = ackv }                                     /* on_ack */
    /* maybe_in_sync: caught up: ACKs gate from now on, then the witness records it */
    :: d_step { role[n] == ACT && sy[n] == ALONE && !rec[n] && lup == 1 && lsb == OTHER(n) &&
                acked[n] >= jl[n] ->
#ifndef MUT_INSYNC_LATE
            sy[n] = PAIRED;
#endif
#ifdef REACH_REPAIR
            if
            :: wasalone[n] -> repaired = 1
            :: else -> skip
            fi;
#endif
            rec[n] = 1; sbv[n] = OTHER(n); wt[n] = W_SYNC }
    /* check_standby: overdue (any time: alone_ms is abstracted) */
    :: d_step { role[n] == ACT && sy[n] == PAIRED && !rec[n] ->
#ifndef MUT_ALONE_EARLY
            sy[n] = GOING;      /* the gate stays at the last ACK until the witness records it */
#else
            sy[n] = ALONE;
#endif
            rec[n] = 1; sbv[n] = NONE; wt[n] = W_ALONE }
    /* confirm: the store's poll releases what the gate allows */
    :: d_step { role[n] == ACT && LEASE_GATE(n) && cf[n] < jd[n] &&
                (sy[n] == ALONE || cf[n] < acked[n]) ->
#ifndef NO_P1
            assert(ep[n] == w_ep);                                /* P1 */
#endif
            assert(JE(n, cf[n]) == ep[n]);
            assert(conf[cf[n]] == 0 || conf[cf[n]] == ep[n]);     /* P2: one message per LSN */
            conf[cf[n]] = ep[n];
            confby[n] = 1;
#ifdef REACH_BOTH
            assert(!(confby[0] && confby[1]));
#endif
#ifdef REACH_REPAIR
            assert(!(repaired && sy[n] == PAIRED));
#endif
            cf[n]++ }
    od
}

init {
    atomic {
        run Witness();
        run Node(0);
        run Node(1)
    }
}

