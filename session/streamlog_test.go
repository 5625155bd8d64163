package session

import (
	"math/rand/v2"
	"testing"
	"time"
)

// Random operations on the log alone; checks its invariants.
func TestStreamLogInvariants(t *testing.T) {
	for seed := uint64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		l := streamLog{keep: 100 * time.Millisecond}
		if seed%2 == 0 {
			l.preroll = webmPreroll
		}
		for op := 0; op < 3000; op++ {
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("seed %d op %d: panic %v (base %d confirmed %d end %d segs %v)", seed, op, r, l.base, l.confirmed, l.end(), l.segs)
					}
				}()
				switch k := rng.IntN(10); {
				case k < 5:
					l.append(unit{data: make([]byte, 1+rng.IntN(9)), dur: time.Duration(rng.IntN(40)) * time.Millisecond, newSeg: rng.IntN(20) == 0})
				case k < 7:
					l.confirm(l.confirmed + int64(rng.IntN(8)))
				case k < 8:
					l.rewind(time.Duration(rng.IntN(200))*time.Millisecond, l.base)
				case k < 9:
					if n := l.end() - l.confirmed; n > 0 {
						l.truncate(l.confirmed + rng.Int64N(n+1))
					}
				default:
					_ = l.resumeAt()
				}
			}()
			bytes, audio := 0, time.Duration(0)
			for p := l.confirmed; p < l.end(); p++ {
				bytes += len(l.at(p).data)
				audio += l.at(p).dur
			}
			if l.confirmed < l.base || l.confirmed > l.end() || bytes != l.pendBytes || audio != l.pendAudio {
				t.Fatalf("seed %d op %d: base %d confirmed %d end %d pend %d/%v, counted %d/%v", seed, op, l.base, l.confirmed, l.end(), l.pendBytes, l.pendAudio, bytes, audio)
			}
			if len(l.units) > 0 && (len(l.segs) == 0 || l.segs[0].start > l.base) {
				t.Fatalf("seed %d op %d: units from %d but segments %v", seed, op, l.base, l.segs)
			}
		}
	}
}
