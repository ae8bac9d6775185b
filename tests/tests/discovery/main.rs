//! LAN discovery: the sans-IO mDNS core on a simulated segment in virtual
//! time, and real nodes on real sockets.

mod lan;
mod netns;
