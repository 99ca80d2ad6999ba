package statusapi

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/user"
	"slices"
	"strconv"
	"syscall"
)

// Cred is who is on the other end of a status API connection, as the
// kernel says (SO_PEERCRED): never what the request claims.
type Cred struct {
	PID, UID, GID int
	Groups        []int // the user's groups, from the user database
}

type credKey struct{}

// peerCred reads the credentials of a unix socket connection's peer; ok
// is false for any other connection.
func peerCred(c net.Conn) (Cred, bool) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Cred{}, false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Cred{}, false
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return Cred{}, false
	}
	cr := Cred{PID: int(cred.Pid), UID: int(cred.Uid), GID: int(cred.Gid), Groups: []int{int(cred.Gid)}}
	if u, err := user.LookupId(strconv.Itoa(cr.UID)); err == nil {
		if gs, err := u.GroupIds(); err == nil {
			for _, g := range gs {
				if n, err := strconv.Atoi(g); err == nil && !slices.Contains(cr.Groups, n) {
					cr.Groups = append(cr.Groups, n)
				}
			}
		}
	}
	return cr, true
}

// Caller returns the credentials of the request's peer; ok is false when
// they are unknown (not a unix socket connection).
func Caller(r *http.Request) (Cred, bool) {
	c, ok := r.Context().Value(credKey{}).(Cred)
	return c, ok
}

// describe names a peer in a refusal.
func (c Cred) describe() string {
	name := "uid " + strconv.Itoa(c.UID)
	if u, err := user.LookupId(strconv.Itoa(c.UID)); err == nil {
		name = "user " + u.Username
	}
	return fmt.Sprintf("%s (pid %d)", name, c.PID)
}

// access is who may do what on the API: readers (the status group's members,
// its user) read; admins (root, and the admin group's members) also change
// state.
type access struct {
	readGID, adminGID int // -1: no such group
	readUID           int // -1: none
}

func lookupGID(name string) int {
	if name == "" {
		return -1
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(g.Gid)
	if err != nil {
		return -1
	}
	return n
}

func lookupUID(name string) int {
	u, err := user.Lookup(name)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(u.Uid)
	if err != nil {
		return -1
	}
	return n
}

func (a access) admin(c Cred) bool {
	return c.UID == 0 || a.adminGID >= 0 && slices.Contains(c.Groups, a.adminGID)
}

func (a access) reader(c Cred) bool {
	return a.admin(c) || c.UID == a.readUID || a.readGID >= 0 && slices.Contains(c.Groups, a.readGID)
}

type accessKey struct{}

// Admin reports whether the request's peer may change state — root, or a
// member of the admin group — and names the peer for a refusal. Outside a
// unix socket (a test's plain listener) nobody is an admin.
func Admin(r *http.Request) (who string, ok bool) {
	c, known := Caller(r)
	a, _ := r.Context().Value(accessKey{}).(access)
	if !known {
		return "an unknown peer", false
	}
	return c.describe(), a.admin(c)
}

// withCred is the http.Server ConnContext that records each connection's
// peer and the access rules.
func (a access) withCred(ctx context.Context, c net.Conn) context.Context {
	ctx = context.WithValue(ctx, accessKey{}, a)
	if cr, ok := peerCred(c); ok {
		ctx = context.WithValue(ctx, credKey{}, cr)
	}
	return ctx
}

// guard refuses, with 403, a peer who may not read.
func (a access) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := Caller(r); ok && !a.reader(c) {
			http.Error(w, c.describe()+" may not read the lodis status: ask to be added to the lodis group", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
