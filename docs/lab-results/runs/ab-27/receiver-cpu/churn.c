#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <unistd.h>
#include <time.h>
int main(int argc,char**argv){ size_t sz=(size_t)atoi(argv[1])<<20; char*m=malloc(sz); memset(m,1,sz); unsigned r=getpid();
 struct timespec ts={0,200000};
 for(;;){ for(int i=0;i<200;i++){ r=r*1103515245+12345; m[(r%(sz>>12))<<12]++; } nanosleep(&ts,0);} }
