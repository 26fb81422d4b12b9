package store

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/devstore"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// One development store per deployment. Its folder,
// <state dir>/devstore/<deployment>/, has two locks (devstore.TryLock), each
// held by one live process and naming it in a file beside it:
//
//   - the store lock: the process that runs FerretDB on the files. The
//     first process that needs the store takes it; every other process of
//     the deployment (`runtime test`, a second command, the children of
//     `runtime dev`) connects to the address it names instead of starting a
//     second FerretDB on the same files.
//   - the serve lock: the process that serves the deployment. `runtime
//     deploy` takes it before the tasks' Init (ClaimServing), so a second
//     `runtime deploy` of the deployment fails at once, naming the first.
//     A serving process does not lean on a one-off command's store (it
//     would vanish when that command ends): it then fails, saying so.
//
// `runtime dev` (a supervisor that restarts the served process on changes)
// calls Hold: it takes both locks as devstore.RoleSupervisor and runs the
// store itself; the `runtime deploy` it starts finds the serve lock held by
// its parent supervisor, which it accepts, and connects to the store.

// VarDevListen sets the development store's address.
const VarDevListen = "DEVSTORE_LISTEN"

// devStore is the development store as this process uses it: run here
// (srv and lock set) or by another process (holder set).
type devStore struct {
	dir    string
	srv    *devstore.Server
	lock   *devstore.Lock
	holder *devstore.Holder
}

func (d *devStore) close() {
	if d.srv != nil {
		d.srv.Stop()
	}
	d.lock.Release()
}

// DevDir is the development store's folder of a deployment.
func DevDir(stateDir, deployment string) (string, error) {
	if stateDir == "" {
		return "", fmt.Errorf("%s is unset and there is no state folder for the development store", VarURI)
	}
	return filepath.Abs(filepath.Join(stateDir, "devstore", deployment))
}

// DefaultDevPort is the development store's port when DEVSTORE_LISTEN is
// unset: 27100 to 27999, from the deployment's name, so that it stays the
// same from one start to the next and differs between deployments.
func DefaultDevPort(deployment string) int {
	h := fnv.New32a()
	h.Write([]byte(deployment))
	return 27100 + int(h.Sum32()%900)
}

// devAddr returns the development store's address and whether the
// deployment chose it.
func devAddr(dep *deployment.Deployment) (addr string, chosen bool, err error) {
	v, ok := dep.Lookup(VarDevListen)
	if !ok {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(DefaultDevPort(dep.Name))), false, nil
	}
	host, port, err := net.SplitHostPort(v)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		return "", false, fmt.Errorf("%s=%q: want 127.0.0.1:PORT", VarDevListen, v)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", false, fmt.Errorf("%s=%q: the development store has no authentication, so it listens on a loopback address only (127.0.0.1:PORT)", VarDevListen, v)
	}
	return v, true, nil
}

func devDatabase(dep *deployment.Deployment, name string) (string, error) {
	if dep.Production {
		return "", errNoURI
	}
	if name == "" {
		name = DevDatabase
	}
	return name, ValidDatabaseName(name)
}

// serving reports whether this process serves the deployment: it holds
// the serve lock, or its parent supervisor does.
func serving(dir string) bool {
	h, err := devstore.Held(dir, devstore.ServeLock)
	return err == nil && h != nil && (h.PID == os.Getpid() || h.Role == devstore.RoleSupervisor && h.PID == os.Getppid())
}

// openDevelopment runs the development store in this process, or connects
// to the one another process of the deployment runs.
func openDevelopment(ctx context.Context, s *runtime.Setup, st *Store, dbName string) error {
	dep := s.Deployment
	dir, err := DevDir(s.StateDir, dep.Name)
	if err != nil {
		return err
	}
	role := devstore.RoleRun
	if serving(dir) {
		role = devstore.RoleServe
	}
	d, err := runDevelopment(ctx, dep, dir, role, s.Log)
	if err != nil {
		return err
	}
	uri := devstore.URI(d.addr(), "")
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetAppName("taskrun").
		SetServerSelectionTimeout(DefaultServerSelectionTimeout))
	if err != nil {
		d.close()
		return fmt.Errorf("connecting to the development store: %w", err)
	}
	st.client, st.dev, st.redacted = c, d, uri
	ev := s.Log.Warn().Str("dir", dir).Str("uri", uri).Str("database", dbName)
	how := fmt.Sprintf("an embedded FerretDB (SQLite files in %s)", dir)
	if d.holder != nil {
		ev = ev.Int("owner_pid", d.holder.PID)
		how = fmt.Sprintf("the development store that %s runs (SQLite files in %s)", d.holder, dir)
	}
	ev.Str("mongosh", MongoshLine(d.addr(), dbName)).
		Msgf("DEVELOPMENT STORE: %s is unset, so writes go to %s, not to MongoDB; set %s to use a real server. Never used in production. Look at the data: %s",
			VarURI, how, VarURI, MongoshLine(d.addr(), dbName))
	return nil
}

func (d *devStore) addr() string {
	if d.srv != nil {
		return d.srv.Addr()
	}
	return d.holder.Addr
}

// MongoshLine is the command that opens a mongosh shell on the development
// store's database.
func MongoshLine(addr, db string) string {
	return "mongosh " + devstore.URI(addr, db)
}

// runDevelopment takes the store lock and starts the store, or returns the
// store that the lock's holder runs.
func runDevelopment(ctx context.Context, dep *deployment.Deployment, dir string, role string, log zerolog.Logger) (*devStore, error) {
	addr, chosen, err := devAddr(dep)
	if err != nil {
		return nil, err
	}
	lock, holder, err := devstore.TryLock(dir, devstore.StoreLock, devstore.Holder{Role: role}, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if lock == nil {
		switch {
		case holder.PID == 0 || holder.Addr == "":
			return nil, fmt.Errorf("the development store in %s is being started by another process that does not say where it listens yet: retry in a moment", dir)
		case role != devstore.RoleRun && !holder.Long():
			return nil, fmt.Errorf("the development store of deployment %s is run by %s, which stops it when it ends: retry when it has ended", dep.Name, holder)
		}
		return &devStore{dir: dir, holder: holder}, nil
	}
	if !devstore.Included {
		lock.Release()
		_, err := devstore.Start(ctx, devstore.Config{})
		return nil, fmt.Errorf("deployment %s has no %s, so it needs the embedded development store, but %w", dep.Name, VarURI, err)
	}
	if !chosen {
		// The usual port is taken (by something that is not this
		// deployment's store: that would hold the lock): any free one.
		if ln, err := net.Listen("tcp", addr); err != nil {
			log.Warn().Str("addr", addr).Err(err).Msgf("the development store's usual port is taken: it listens on another one this time (set %s to choose)", VarDevListen)
			addr = "127.0.0.1:0"
		} else {
			ln.Close()
		}
	}
	srv, err := devstore.Start(ctx, devstore.Config{Dir: dir, Addr: addr, Log: devstore.Slogger(log)})
	if err != nil {
		lock.Release()
		if chosen {
			return nil, fmt.Errorf("starting the development store on %s (%s) in %s: %w", addr, VarDevListen, dir, err)
		}
		return nil, fmt.Errorf("starting the development store in %s: %w", dir, err)
	}
	if err := lock.Update(devstore.Holder{Role: role, Addr: srv.Addr()}); err != nil {
		srv.Stop()
		lock.Release()
		return nil, err
	}
	return &devStore{dir: dir, srv: srv, lock: lock}, nil
}

// ClaimServing is for `runtime deploy`, before the tasks' Init: in a
// deployment on the development store it takes the store folder's serve
// lock for this process (url: what it serves, for the message a second
// one gets), so that a second `runtime deploy` of the deployment fails at
// once naming this one. release drops it (at exit it drops by itself). A
// deployment with MONGO_URI needs no lock: several instances share a real
// server.
func ClaimServing(dep *deployment.Deployment, stateDir, url string) (release func(), err error) {
	if !Development(dep) {
		return func() {}, nil
	}
	dir, err := DevDir(stateDir, dep.Name)
	if err != nil {
		return nil, err
	}
	lock, holder, err := devstore.TryLock(dir, devstore.ServeLock, devstore.Holder{Role: devstore.RoleServe, URL: url}, 2*time.Second)
	if err != nil {
		return nil, err
	}
	if lock != nil {
		return lock.Release, nil
	}
	if holder.Role == devstore.RoleSupervisor && holder.PID == os.Getppid() {
		return func() {}, nil // started by runtime dev, which holds it for its children
	}
	who := "another process"
	if holder.PID != 0 {
		who = holder.String()
	}
	return nil, fmt.Errorf("deployment %s is already served by %s: one development store per deployment, so stop that one first (a second instance needs %s: a MongoDB server both use)", dep.Name, who, VarURI)
}

// Hold is for a supervisor (`runtime dev`) that starts and restarts
// `runtime deploy` of dep as its children: it takes the serve lock and
// the store lock as devstore.RoleSupervisor and runs the development store
// in this process until release, so that the store keeps running while
// the children come and go; each child accepts its parent's serve lock and
// connects to the store. It returns the store's connection string (no
// database). A deployment with MONGO_URI needs nothing: uri is "" and
// release a no-op.
func Hold(ctx context.Context, dep *deployment.Deployment, stateDir string, log zerolog.Logger) (uri string, release func(), err error) {
	if !Development(dep) {
		return "", func() {}, nil
	}
	dir, err := DevDir(stateDir, dep.Name)
	if err != nil {
		return "", nil, err
	}
	serve, holder, err := devstore.TryLock(dir, devstore.ServeLock, devstore.Holder{Role: devstore.RoleSupervisor}, 2*time.Second)
	if err != nil {
		return "", nil, err
	}
	if serve == nil {
		return "", nil, fmt.Errorf("deployment %s is already served by %s: stop it first", dep.Name, holder)
	}
	d, err := runDevelopment(ctx, dep, dir, devstore.RoleSupervisor, log)
	if err == nil && d.srv == nil {
		err = fmt.Errorf("the development store of deployment %s is run by %s: retry when it has ended", dep.Name, d.holder)
	}
	if err != nil {
		serve.Release()
		return "", nil, err
	}
	db, _ := devDatabase(dep, dep.Get(VarDatabase))
	log.Warn().Str("dir", dir).Str("uri", d.srv.URI("")).Str("mongosh", MongoshLine(d.srv.Addr(), db)).
		Msg("DEVELOPMENT STORE: held for the served processes; never used in production")
	return d.srv.URI(""), func() { d.close(); serve.Release() }, nil
}
