package testenv

import (
	"context"
	"fmt"
	"os"
	"time"
)

// Tests is what Main runs: a test package's *testing.M.
type Tests interface{ Run() int }

// Suite says how Main prepares the machine of a test package.
type Suite struct {
	// Machine configures Boot; give the package's machine a Name of its own.
	Machine Options
	// NoInstall leaves lodis out of the machine, for a package that installs
	// it another way (the Debian package). Default: InstallLodis from RepoRoot.
	NoInstall bool
	// SetupTimeout bounds boot, install and setup together. Default 10 min.
	SetupTimeout time.Duration
	// Journal names the units whose journal Main prints when a test failed.
	// Default: the whole journal.
	Journal []string
}

// JournalLines is how many of the machine's last journal lines Main prints
// when a test failed.
const JournalLines = 400

// Main is a test package's TestMain: it boots the machine, installs lodis
// (unless s.NoInstall), runs setup with the machine (when setup is not nil),
// runs the tests, prints the last JournalLines of the machine's journal when
// a test failed, and closes the machine. It returns the exit code for
// os.Exit: 1 when the machine could not be prepared, with the reason on
// stderr; otherwise m.Run's.
//
//	func TestMain(tm *testing.M) {
//		os.Exit(testenv.Main(tm, testenv.Suite{Machine: testenv.Options{Name: "lodis-x"}},
//			func(ctx context.Context, mc *testenv.Machine) error { m = mc; return nil }))
//	}
func Main(m Tests, s Suite, setup func(ctx context.Context, mc *Machine) error) int {
	if s.SetupTimeout == 0 {
		s.SetupTimeout = 10 * time.Minute
	}
	name := s.Machine.Name
	if name == "" {
		name = DefaultName
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.SetupTimeout)
	defer cancel()
	mc, err := Boot(ctx, s.Machine)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %s: boot a real systemd: %v\n", name, err)
		return 1
	}
	defer mc.Close()
	if err := prepare(ctx, mc, s, setup); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %s: %v (console: %s)\n", name, err, mc.LogPath())
		return 1
	}
	code := m.Run()
	if code != 0 {
		mc.printJournal(s.Journal)
	}
	return code
}

func prepare(ctx context.Context, mc *Machine, s Suite, setup func(context.Context, *Machine) error) error {
	if !s.NoInstall {
		repo, err := RepoRoot()
		if err != nil {
			return err
		}
		if err := mc.InstallLodis(ctx, repo); err != nil {
			return fmt.Errorf("install lodis: %w", err)
		}
	}
	if setup == nil {
		return nil
	}
	if err := setup(ctx, mc); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	return nil
}

// printJournal prints the last JournalLines lines of units' journal (all
// units when none is named) on stderr, for the post-mortem of a failed test.
func (m *Machine) printJournal(units []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"journalctl", "--no-pager", "-o", "short-precise", "-n", fmt.Sprint(JournalLines)}
	what := "the test machine"
	if len(units) > 0 {
		what = fmt.Sprint(units)
	}
	for _, u := range units {
		args = append(args, "-u", u)
	}
	out, err := m.Output(ctx, args...)
	fmt.Fprintf(os.Stderr, "--- journal of %s (last %d lines) ---\n%s\n%v\n", what, JournalLines, out, err)
}

// Exit is a test package's TestMain for packages that prepare more than
// Main does: it runs run, prints its error after name on stderr (exit code
// 1), and exits with run's code.
//
//	func TestMain(tm *testing.M) { testenv.Exit("test/x", func() (int, error) { return run(tm) }) }
func Exit(name string, run func() (int, error)) {
	code, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		code = 1
	}
	os.Exit(code)
}

// Workspace is what a test package needs before it builds anything: Check
// passed, the lodis source tree (RepoRoot) and a new temporary directory
// named after prefix, which the caller removes.
func Workspace(prefix string) (repo, dir string, err error) {
	if err := Check(); err != nil {
		return "", "", err
	}
	if repo, err = RepoRoot(); err != nil {
		return "", "", err
	}
	if dir, err = os.MkdirTemp("", prefix); err != nil {
		return "", "", fmt.Errorf("test workspace: %w", err)
	}
	return repo, dir, nil
}
