fn main() {
    eprintln!("segment: not implemented yet");
    std::process::exit(2);
}
