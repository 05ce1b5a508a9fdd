fn main() {
    eprintln!("style: not implemented yet");
    std::process::exit(2);
}
